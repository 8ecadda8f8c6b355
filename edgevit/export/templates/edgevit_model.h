/* EdgeViT: a tiny Vision Transformer that reads a handwritten digit, as one C99 file.
 *
 * Exported from @SOURCE_NAME@ (weights sha256 @MODEL_ID@) by `python tools/export.py`;
 * regenerate rather than edit.
 *
 * Memory, all of it static (no heap, no libc beyond math.h):
 *   flash: @WEIGHTS_BYTES@ bytes of const weights
 *   RAM:   @RAM_BYTES@ bytes of static buffers (input, outputs, activation arenas)@ATTENTION_NOTE@
 *   stack: @STACK_NOTE@
 * The functions share the static buffers: call them from one thread at a time.
 */
#ifndef EDGEVIT_MODEL_H
#define EDGEVIT_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDGEVIT_IMAGE_SIZE @IMAGE_SIZE@
#define EDGEVIT_PIXELS @PIXELS@
#define EDGEVIT_NUM_CLASSES @NUM_CLASSES@
#define EDGEVIT_DEPTH @DEPTH@  /* transformer layers */
#define EDGEVIT_HEADS @HEADS@  /* attention heads per layer */
#define EDGEVIT_TOKENS @TOKENS@ /* the class token, then the patches in row-major order */
#define EDGEVIT_HAS_ATTENTION @HAS_ATTENTION@
#define EDGEVIT_ATTENTION_SIZE @ATTENTION_SIZE@ /* floats: (layer, head, query token, key token) */
#define EDGEVIT_WEIGHTS_BYTES @WEIGHTS_BYTES@
#define EDGEVIT_RAM_BYTES @RAM_BYTES@
#define EDGEVIT_STACK_BYTES @STACK_BYTES@

/* "Not a digit": the answer for an image the model does not take for a digit, because its class for
 * non-digits (EDGEVIT_REJECT_CLASS, -1 if it has none) is more likely than EDGEVIT_REJECT_CLASS_THRESHOLD
 * (-1: when it is the most likely class), or because no digit is at least EDGEVIT_REJECT_THRESHOLD
 * likely (0: never). The same rule as edgevit-classify. */
#define EDGEVIT_DIGITS 10 /* classes 0-9 are the digits */
#define EDGEVIT_NOT_A_DIGIT 10
#define EDGEVIT_REJECT_CLASS @REJECT_CLASS@
#define EDGEVIT_REJECT_THRESHOLD @REJECT_THRESHOLD@
#define EDGEVIT_REJECT_CLASS_THRESHOLD @REJECT_CLASS_THRESHOLD@

/* What the entry points return instead of an answer when they cannot give one. */
#define EDGEVIT_ERROR_ARGUMENT (-1)     /* a required pointer is NULL, or count is negative */
#define EDGEVIT_ERROR_NO_ATTENTION (-2) /* attention asked of a model exported without it */

/* A 28x28 MNIST-style image (white digit on black, row-major, 0-255) -> the digit (0-9),
 * EDGEVIT_NOT_A_DIGIT, or EDGEVIT_ERROR_ARGUMENT. probs receives every class's probability. */
int edgevit_classify(const uint8_t image[EDGEVIT_PIXELS], float probs[EDGEVIT_NUM_CLASSES]);

/* The same from float pixels on [0, 255]. attention may be NULL; otherwise it receives
 * EDGEVIT_ATTENTION_SIZE floats (EDGEVIT_ERROR_NO_ATTENTION if the model was exported without them). */
int edgevit_classify_pixels(const float pixels[EDGEVIT_PIXELS], float probs[EDGEVIT_NUM_CLASSES], float *attention);

/* count images one after another: pixels (count, EDGEVIT_PIXELS), probs (count, EDGEVIT_NUM_CLASSES),
 * attention NULL or (count, EDGEVIT_ATTENTION_SIZE). Returns count, or a negative EDGEVIT_ERROR_. */
int edgevit_classify_many(const float *pixels, int count, float *probs, float *attention);

/* The answer the entry points give for these probabilities: the digit (0-9) or EDGEVIT_NOT_A_DIGIT.
 * confidence, unless NULL, receives the probability behind it: the digit's, or for "not a digit"
 * the non-digit class's (when it decided) or 1 minus the likeliest digit's. */
int edgevit_answer(const float probs[EDGEVIT_NUM_CLASSES], float *confidence);

/* The likeliest digit, whatever the rule says (edgevit-classify --always-digit). */
int edgevit_best_digit(const float probs[EDGEVIT_NUM_CLASSES]);

/* The sha256 of the weights file this model was exported from. */
const char *edgevit_model_id(void);
@INSPECT_H@
#ifdef __cplusplus
}
#endif

#endif
