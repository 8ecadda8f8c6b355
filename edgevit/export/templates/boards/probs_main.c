/* Test harness for the exported EdgeViT model on Linux (this machine, or 64-bit Arm under
 * qemu-aarch64-static; edgevit.export.boards.classify_linux builds and runs it): every probability, exactly.
 *
 *   ./edgevit-probs images.raw       images.raw: N images of 784 bytes each, back to back
 *
 * prints one line per image: what edgevit_classify returned, then every class's probability with %.9g,
 * which round-trips every float32 exactly (main.c's 4 decimals are for people, this is for tests).
 * Reading all images from one file keeps a run under an emulator to one process start.
 */
#include <stdio.h>

#include "edgevit_model.h"

int main(int argc, char **argv) {
  uint8_t image[EDGEVIT_PIXELS];
  float probs[EDGEVIT_NUM_CLASSES];
  FILE *f;
  size_t got;
  int k, digit;
  if (argc != 2) {
    fprintf(stderr, "usage: %s IMAGES.raw (N x %d bytes)\n", argv[0], EDGEVIT_PIXELS);
    return 2;
  }
  if ((f = fopen(argv[1], "rb")) == NULL) {
    fprintf(stderr, "edgevit-probs: cannot open %s\n", argv[1]);
    return 1;
  }
  while ((got = fread(image, 1, EDGEVIT_PIXELS, f)) == EDGEVIT_PIXELS) {
    digit = edgevit_classify(image, probs);
    printf("%d", digit);
    for (k = 0; k < EDGEVIT_NUM_CLASSES; k++) printf(" %.9g", (double)probs[k]);
    printf("\n");
  }
  fclose(f);
  if (got != 0) {
    fprintf(stderr, "edgevit-probs: %s: trailing %zu bytes (not a multiple of %d)\n", argv[1], got, EDGEVIT_PIXELS);
    return 1;
  }
  return 0;
}
