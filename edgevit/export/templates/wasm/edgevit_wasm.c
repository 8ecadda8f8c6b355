/* What a browser needs beyond edgevit_model.h: buffers inside the module's linear memory.
 *
 * JavaScript cannot pass arrays to WebAssembly, only numbers. So it writes the 784 pixels straight
 * into `pixels` (at the address edgevit_pixels_buffer() returns), calls
 * edgevit_classify_pixels(pixels, probs, attention) with these three addresses, and reads the
 * results back from the same memory: no copies through the JS/WASM boundary, no allocator. The answer's
 * confidence comes the same way: edgevit_answer(probs, confidence) writes it to `confidence`.
 */
#include "edgevit_model.h"

static float pixels[EDGEVIT_PIXELS];
static float probs[EDGEVIT_NUM_CLASSES];
static float attention[EDGEVIT_ATTENTION_SIZE]; /* (layer, head, query token, key token) */
static float confidence;

float *edgevit_pixels_buffer(void) { return pixels; }
float *edgevit_probs_buffer(void) { return probs; }
float *edgevit_attention_buffer(void) { return attention; }
float *edgevit_confidence_buffer(void) { return &confidence; }
int edgevit_not_a_digit(void) { return EDGEVIT_NOT_A_DIGIT; }
int edgevit_num_classes(void) { return EDGEVIT_NUM_CLASSES; }
int edgevit_attention_size(void) { return EDGEVIT_ATTENTION_SIZE; }

#ifdef EDGEVIT_HAS_INSPECT
/* edgevit_inspect's buffers: the knocked-out tokens in, every layer's query, key, value and scores out */
static unsigned char knockout[EDGEVIT_TOKENS];
static float query[EDGEVIT_QKV_SIZE], key[EDGEVIT_QKV_SIZE], value[EDGEVIT_QKV_SIZE];
static float scores[EDGEVIT_ATTENTION_SIZE];

unsigned char *edgevit_knockout_buffer(void) { return knockout; }
float *edgevit_query_buffer(void) { return query; }
float *edgevit_key_buffer(void) { return key; }
float *edgevit_value_buffer(void) { return value; }
float *edgevit_scores_buffer(void) { return scores; }
int edgevit_qkv_size(void) { return EDGEVIT_QKV_SIZE; }
#endif
