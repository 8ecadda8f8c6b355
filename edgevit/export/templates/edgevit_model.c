/* EdgeViT: a tiny Vision Transformer that reads a handwritten digit, as one C99 file.
 *
 * Exported from @SOURCE_NAME@ (weights sha256 @MODEL_ID@) by `python tools/export.py` from the
 * graph tinygrad compiled for it; regenerate rather than edit. C99, needs only math.h.
 *
 * How it runs: a 28x28 image is cut into @PATCHES@ patches of @PATCH_SIZE@x@PATCH_SIZE@ pixels, each embedded into
 * @DIM@ numbers; a class token joins them. Each of @DEPTH@ layers projects every token into a Query, a Key
 * and a Value, softmax(QK^T/sqrt(d)) decides how much each token takes from every other, and an MLP
 * follows; the class token's final state gives the probabilities. edgevit_forward() below is that
 * computation as @STEPS@ calls of @KERNELS@ distinct kernels, each commented with the layer it computes.
 *
 * Reading the kernels: tinygrad names each after its loops. E_ kernels are elementwise (no sums);
 * r_ kernels reduce (a sum or a max over one axis: matrix products, LayerNorm statistics, softmax);
 * the numbers are the loop sizes, outer to inner. The k<number> prefix is this file's own, in order of
 * first use, because tinygrad can give two different kernels the same name.
 *
 * Memory: @WEIGHTS_COUNT@ const weight arrays (@WEIGHTS_BYTES@ bytes, flash on a microcontroller); the
 * activations live in one static arena per type, where buffers whose lifetimes do not overlap share
 * space (@ARENA_BYTES@ bytes instead of @SCRATCH_BYTES@).
 */
#include <math.h>
#include <stddef.h>

#include "edgevit_model.h"

/* the kernels reinterpret float bits as int: both must be 32 bits */
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

/* The training normalisation, in the same float32 steps as edgevit.data.normalize. */
static float edgevit_normalize(float pixel) { return (pixel * @PIXEL_SCALE@ - @MEAN@) / @STD@; }

/* first index of the largest of n values: numpy's argmax, so C and Python break ties alike */
static int edgevit_argmax(const float *values, int n) {
  int i, best = 0;
  for (i = 1; i < n; i++)
    if (values[i] > values[best]) best = i;
  return best;
}

int edgevit_best_digit(const float probs[EDGEVIT_NUM_CLASSES]) { return edgevit_argmax(probs, EDGEVIT_DIGITS); }

int edgevit_answer(const float probs[EDGEVIT_NUM_CLASSES], float *confidence) {
  int digit = edgevit_argmax(probs, EDGEVIT_DIGITS), answer = digit;
  float behind = probs[digit];
#if EDGEVIT_REJECT_CLASS >= 0
  if (EDGEVIT_REJECT_CLASS_THRESHOLD < 0.0f ? edgevit_argmax(probs, EDGEVIT_NUM_CLASSES) == EDGEVIT_REJECT_CLASS
                                           : probs[EDGEVIT_REJECT_CLASS] > EDGEVIT_REJECT_CLASS_THRESHOLD) {
    if (confidence != NULL) *confidence = probs[EDGEVIT_REJECT_CLASS];
    return EDGEVIT_NOT_A_DIGIT;
  }
#endif
  if (probs[digit] < EDGEVIT_REJECT_THRESHOLD) {
    answer = EDGEVIT_NOT_A_DIGIT;
    behind = 1.0f - probs[digit];
  }
  if (confidence != NULL) *confidence = behind;
  return answer;
}

/* The forward pass on edgevit_input, then the outputs copied out; returns the answer. */
static int edgevit_run(float probs[EDGEVIT_NUM_CLASSES], float *attention) {
  int i;
  edgevit_forward();
  for (i = 0; i < EDGEVIT_NUM_CLASSES; i++) probs[i] = edgevit_probs[i];
@COPY_ATTENTION@
  return edgevit_answer(probs, NULL);
}

int edgevit_classify_pixels(const float pixels[EDGEVIT_PIXELS], float probs[EDGEVIT_NUM_CLASSES], float *attention) {
  int i;
  if (pixels == NULL || probs == NULL) return EDGEVIT_ERROR_ARGUMENT;
  if (attention != NULL && !EDGEVIT_HAS_ATTENTION) return EDGEVIT_ERROR_NO_ATTENTION;
  for (i = 0; i < EDGEVIT_PIXELS; i++) edgevit_input[i] = edgevit_normalize(pixels[i]);
  return edgevit_run(probs, attention);
}

int edgevit_classify(const uint8_t image[EDGEVIT_PIXELS], float probs[EDGEVIT_NUM_CLASSES]) {
  int i;
  if (image == NULL || probs == NULL) return EDGEVIT_ERROR_ARGUMENT;
  /* straight into the input buffer: no pixel copy on the stack */
  for (i = 0; i < EDGEVIT_PIXELS; i++) edgevit_input[i] = edgevit_normalize((float)image[i]);
  return edgevit_run(probs, NULL);
}

int edgevit_classify_many(const float *pixels, int count, float *probs, float *attention) {
  int n, result;
  if (pixels == NULL || probs == NULL || count < 0) return EDGEVIT_ERROR_ARGUMENT;
  for (n = 0; n < count; n++) {
    result = edgevit_classify_pixels(pixels + (size_t)n * EDGEVIT_PIXELS, probs + (size_t)n * EDGEVIT_NUM_CLASSES,
                                     attention == NULL ? NULL : attention + (size_t)n * EDGEVIT_ATTENTION_SIZE);
    if (result < 0) return result;
  }
  return count;
}

const char *edgevit_model_id(void) { return "@MODEL_ID@"; }
@INSPECT_C@
