/* Example: classify 28x28 digits with the exported EdgeViT model.
 *
 *   ./edgevit [--always-digit] digit.pgm [more.pgm ...]
 *
 * prints "DIGIT PROBABILITY", or "not a digit PROBABILITY" for an image the model takes for no digit
 * (--always-digit: the likeliest digit instead), and the path when given several images.
 *
 * Input: a binary PGM (P5, 8-bit) of 28x28 pixels, or a raw file of exactly 784 bytes, white digit on
 * black as in MNIST. Other images need EdgeViT's preprocessing first (edgevit-classify does it).
 */
#include <stdio.h>
#include <string.h>

#include "edgevit_model.h"

static int skip_space_and_comments(FILE *f) {
  int c;
  while ((c = fgetc(f)) != EOF) {
    if (c == '#') {
      while ((c = fgetc(f)) != EOF && c != '\n') {}
    } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
      ungetc(c, f);
      return 1;
    }
  }
  return 0;
}

static int read_number(FILE *f, int *value) { return skip_space_and_comments(f) && fscanf(f, "%d", value) == 1; }

/* 0 on success, else prints why to stderr */
static int read_image(const char *path, uint8_t image[EDGEVIT_PIXELS]) {
  unsigned char magic[2];
  int width, height, maxval;
  long size;
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "edgevit: error: cannot open %s\n", path);
    return 1;
  }
  fseek(f, 0, SEEK_END);
  size = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (fread(magic, 1, 2, f) == 2 && magic[0] == 'P' && magic[1] == '5') {
    if (!read_number(f, &width) || !read_number(f, &height) || !read_number(f, &maxval) || maxval <= 0 || maxval > 255) {
      fprintf(stderr, "edgevit: error: %s: not an 8-bit binary PGM\n", path);
      fclose(f);
      return 1;
    }
    if (width != EDGEVIT_IMAGE_SIZE || height != EDGEVIT_IMAGE_SIZE) {
      fprintf(stderr, "edgevit: error: %s is %dx%d; expected %dx%d\n", path, width, height, EDGEVIT_IMAGE_SIZE,
              EDGEVIT_IMAGE_SIZE);
      fclose(f);
      return 1;
    }
    fgetc(f); /* the single whitespace before the pixels */
  } else if (size == EDGEVIT_PIXELS) {
    fseek(f, 0, SEEK_SET);
    maxval = 255;
  } else {
    fprintf(stderr, "edgevit: error: %s is neither a binary PGM nor %d raw bytes\n", path, EDGEVIT_PIXELS);
    fclose(f);
    return 1;
  }
  if (fread(image, 1, EDGEVIT_PIXELS, f) != EDGEVIT_PIXELS) {
    fprintf(stderr, "edgevit: error: %s is truncated\n", path);
    fclose(f);
    return 1;
  }
  fclose(f);
  if (maxval != 255) {
    int i;
    for (i = 0; i < EDGEVIT_PIXELS; i++) image[i] = (uint8_t)(image[i] > maxval ? 255 : image[i] * 255 / maxval);
  }
  return 0;
}

int main(int argc, char **argv) {
  uint8_t image[EDGEVIT_PIXELS];
  float probs[EDGEVIT_NUM_CLASSES], confidence;
  int i, first = 1, always_digit = 0, failed = 0;
  if (argc > 1 && strcmp(argv[1], "--always-digit") == 0) {
    always_digit = 1;
    first = 2;
  }
  if (argc <= first || strcmp(argv[first], "-h") == 0 || strcmp(argv[first], "--help") == 0) {
    fprintf(stderr, "usage: %s [--always-digit] IMAGE.pgm [IMAGE.pgm ...]\n", argv[0]);
    return argc <= first ? 2 : 0;
  }
  for (i = first; i < argc; i++) {
    int answer;
    if (read_image(argv[i], image) != 0) {
      failed = 1;
      continue;
    }
    edgevit_classify(image, probs); /* its answer is edgevit_answer's, recomputed below with the confidence */
    answer = always_digit ? edgevit_best_digit(probs) : edgevit_answer(probs, &confidence);
    if (always_digit) confidence = probs[answer];
    if (answer == EDGEVIT_NOT_A_DIGIT) printf("not a digit %.4f", confidence);
    else printf("%d %.4f", answer, confidence);
    if (argc - first > 1) printf(" %s", argv[i]);
    printf("\n");
  }
  return failed;
}
