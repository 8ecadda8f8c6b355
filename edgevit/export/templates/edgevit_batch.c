/* EdgeViT, @BATCH@ images at a time: the C runtime's graph for throughput.
 *
 * The same model as edgevit_model.c (weights sha256 @MODEL_ID@, from @SOURCE_NAME@), captured by
 * tinygrad for a batch of @BATCH@ images and searched for this machine: every kernel walks @BATCH@ images'
 * tokens, so its loops are longer and each weight is read once per @BATCH@ images. Built into its own
 * library by the C runtime (edgevit.runtime.c); regenerate rather than edit. C99, needs only math.h.
 */
#include <math.h>
#include <stddef.h>

#define EDGEVIT_BATCH @BATCH@
#define EDGEVIT_PIXELS @PIXELS@
#define EDGEVIT_NUM_CLASSES @NUM_CLASSES@
#define EDGEVIT_DEPTH @DEPTH@
#define EDGEVIT_LAYER_MAPS @LAYER_MAPS@ /* floats of one image's maps in one layer: heads x tokens x tokens */

typedef char edgevit_int_is_32_bits[sizeof(int) == 4 && sizeof(float) == 4 ? 1 : -1];

/* ---- weights ---- */
@WEIGHTS@

/* ---- activations ---- */
@ARENAS@
@IO_BUFFERS@

@SUPPORT_C@/* ---- kernels, as tinygrad generated them ---- */
@KERNELS_C@

/* The whole network on edgevit_input: @STEPS@ kernel calls. */
static void edgevit_forward(void) {
@ACTIVATIONS@

@CALLS@
}

static float edgevit_normalize(float pixel) { return (pixel * @PIXEL_SCALE@ - @MEAN@) / @STD@; }

/* EDGEVIT_BATCH images of float pixels on [0, 255] -> their probabilities and, unless attention is
 * NULL, their attention maps, image after image as edgevit_classify_many writes them. */
int edgevit_classify_batch(const float *pixels, float *probs, float *attention) {
  int i, layer, image;
  if (pixels == NULL || probs == NULL) return -1;
  for (i = 0; i < EDGEVIT_BATCH * EDGEVIT_PIXELS; i++) edgevit_input[i] = edgevit_normalize(pixels[i]);
  edgevit_forward();
  for (i = 0; i < EDGEVIT_BATCH * EDGEVIT_NUM_CLASSES; i++) probs[i] = edgevit_probs[i];
  if (attention != NULL) /* the graph's maps are (layer, image, ...): each image's layers go together */
    for (layer = 0; layer < EDGEVIT_DEPTH; layer++)
      for (image = 0; image < EDGEVIT_BATCH; image++)
        for (i = 0; i < EDGEVIT_LAYER_MAPS; i++)
          attention[((size_t)image * EDGEVIT_DEPTH + layer) * EDGEVIT_LAYER_MAPS + i] =
              @ATTENTION@[((size_t)layer * EDGEVIT_BATCH + image) * EDGEVIT_LAYER_MAPS + i];
  return EDGEVIT_BATCH;
}

const char *edgevit_model_id(void) { return "@MODEL_ID@"; }
