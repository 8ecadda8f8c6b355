
/* Exported for the explorer (edgevit demo): edgevit_inspect gives the numbers behind every weight. */
#define EDGEVIT_HAS_INSPECT 1
#define EDGEVIT_HEAD_DIM @HEAD_DIM@
#define EDGEVIT_QKV_SIZE @QKV_SIZE@ /* floats: (layer, head, token, d) */
int edgevit_inspect(const float pixels[EDGEVIT_PIXELS], const unsigned char knockout[EDGEVIT_TOKENS],
                    float probs[EDGEVIT_NUM_CLASSES], float *attention, float *query, float *key, float *value,
                    float *scores);
