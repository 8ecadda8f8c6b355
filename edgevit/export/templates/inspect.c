
/* The explorer's view of one image: everything behind its attention weights, with patches knocked
 * out. knockout[t] != 0 removes token t as a key in every layer and head (its scores are minus
 * infinity before the softmax, so no token reads from it; it still asks with its own query). query,
 * key and value receive every layer's (layer, head, token, d), EDGEVIT_QKV_SIZE floats each, and
 * scores the q.k/sqrt(d) behind the weights, (layer, head, query token, key token). */
int edgevit_inspect(const float pixels[EDGEVIT_PIXELS], const unsigned char knockout[EDGEVIT_TOKENS],
                    float probs[EDGEVIT_NUM_CLASSES], float *attention, float *query, float *key, float *value,
                    float *scores) {
  int i, answer;
  if (pixels == NULL || knockout == NULL || probs == NULL || attention == NULL || query == NULL || key == NULL ||
      value == NULL || scores == NULL)
    return EDGEVIT_ERROR_ARGUMENT;
  for (i = 0; i < EDGEVIT_PIXELS; i++) edgevit_input[i] = edgevit_normalize(pixels[i]);
  for (i = 0; i < EDGEVIT_TOKENS; i++) edgevit_knockout[i] = knockout[i] ? 1.0f : 0.0f;
  answer = edgevit_run(probs, attention);
  for (i = 0; i < EDGEVIT_TOKENS; i++) edgevit_knockout[i] = 0.0f; /* the other entry points knock nothing out */
  for (i = 0; i < EDGEVIT_QKV_SIZE; i++) {
    query[i] = edgevit_query[i];
    key[i] = edgevit_key[i];
    value[i] = edgevit_value[i];
  }
  for (i = 0; i < EDGEVIT_ATTENTION_SIZE; i++) scores[i] = edgevit_scores[i];
  return answer;
}
