/* EdgeViT bare metal: classifies the images compiled in from test_images.h and prints, over semihosting,
 *
 *   INDEX ANSWER PROBABILITY         one line per image: what edgevit_classify returned (a digit, or
 *                                    EDGEVIT_NOT_A_DIGIT: 10) and the probability behind it with 6 decimals
 *                                    (a negative return is an error: no probability)
 *   size flash=... ram=... ...       what the program occupies, then the peak stack measured while classifying
 *
 * and exits with status 0 (1 if the model refused an image). Built with -DBOARD_PRINT_BITS=1, each image
 * line also carries the IEEE-754 bits of every class's probability (hex, class 0 first): what tools
 * compare against the Python runtime, exactly, without printf's float support.
 *
 * No printf: newlib's float formatting (-u _printf_float) would add more flash than the model's code,
 * so numbers are formatted here with integer arithmetic.
 */
#include <stdint.h>

#include "board.h"
#include "edgevit_model.h"
#include "test_images.h"

#ifndef BOARD_PRINT_BITS
#define BOARD_PRINT_BITS 0
#endif

/* From the linker script (cortex-m.ld); the sizes are absolute symbols, read as addresses. */
extern uint32_t __stack_limit[], __stack_top[];
extern char __flash_used[], __ram_used[], __stack_size[];

/* Markers for the QEMU instruction-counting plugin (insncount.c), which counts the instructions
 * executed from a call of edgevit_bench_begin to the next call of edgevit_bench_end. noipa: gcc must
 * neither inline them nor merge the two identical empty bodies into one address. */
__attribute__((noipa)) void edgevit_bench_begin(void) { __asm__ volatile(""); }
__attribute__((noipa)) void edgevit_bench_end(void) { __asm__ volatile(""); }

/* ---- peak stack, measured: fill the free stack with a pattern, look for the deepest overwrite ---- */
#define STACK_PAINT 0xC0FFEE11u

/* Fills everything below this function's own frame; the classifier called next from the same
 * frame depth can only write below it. */
static __attribute__((noinline)) void stack_paint(void) {
  uint32_t *sp, *p;
  __asm__ volatile("mov %0, sp" : "=r"(sp));
  for (p = __stack_limit; p < sp; p++) *p = STACK_PAINT;
}

/* Bytes of stack used since reset at the deepest point: from the top down to the first word that
 * no longer holds the pattern (every frame from Reset_Handler down). */
static uint32_t stack_peak(void) {
  const uint32_t *p = __stack_limit;
  while (p < __stack_top && *p == STACK_PAINT) p++;
  return (uint32_t)((const char *)__stack_top - (const char *)p);
}

/* ---- formatting into a line buffer ---- */
/* room for the longest line: an index, a class, a probability and the bits of every class */
static char line[64 + 9 * EDGEVIT_NUM_CLASSES];
static int line_length;

static void put_text(const char *text) {
  while (*text && line_length < (int)sizeof line - 1) line[line_length++] = *text++;
}

static void put_uint(uint32_t value) {
  char digits[10];
  int n = 0;
  do digits[n++] = (char)('0' + value % 10u); while ((value /= 10u) != 0);
  while (n > 0 && line_length < (int)sizeof line - 1) line[line_length++] = digits[--n];
}

static void put_hex(uint32_t value) {
  int shift;
  for (shift = 28; shift >= 0 && line_length < (int)sizeof line - 1; shift -= 4)
    line[line_length++] = "0123456789abcdef"[(value >> shift) & 0xFu];
}

/* p on [0, 1] with 6 decimals, rounded */
static void put_probability(float p) {
  uint32_t micro = (uint32_t)(p * 1000000.0f + 0.5f), scale;
  put_uint(micro / 1000000u);
  put_text(".");
  for (scale = 100000u; scale > 0u; scale /= 10u) {
    char digit[2] = {(char)('0' + (micro / scale) % 10u), '\0'};
    put_text(digit);
  }
}

static void flush_line(void) {
  line[line_length++] = '\n';
  line[line_length] = '\0';
  board_write(line);
  line_length = 0;
}

static uint32_t float_bits(float value) {
  union { float f; uint32_t u; } bits;
  bits.f = value;
  return bits.u;
}

/* "INDEX ANSWER PROBABILITY" for image INDEX: the answer edgevit_classify returned and the probability
 * behind it (edgevit_answer's confidence); nothing after an error. */
static void print_result(int index, int result, const float probs[EDGEVIT_NUM_CLASSES]) {
  int k;
  float confidence;
  put_uint((uint32_t)index);
  put_text(" ");
  if (result < 0) {
    put_text("-");
    put_uint((uint32_t)-result);
    flush_line();
    return;
  }
  edgevit_answer(probs, &confidence); /* the same answer as result: only its confidence is wanted */
  put_uint((uint32_t)result);
  put_text(" ");
  put_probability(confidence);
  if (BOARD_PRINT_BITS)
    for (k = 0; k < EDGEVIT_NUM_CLASSES; k++) {
      put_text(" ");
      put_hex(float_bits(probs[k]));
    }
  flush_line();
}

/* flash: code + const data + the initial values of .data; RAM: stack reserve + .data + .bss */
static void print_sizes(uint32_t stack_peak_bytes) {
  put_text("size flash=");
  put_uint((uint32_t)(uintptr_t)__flash_used);
  put_text(" ram=");
  put_uint((uint32_t)(uintptr_t)__ram_used);
  put_text(" stack_reserved=");
  put_uint((uint32_t)(uintptr_t)__stack_size);
  put_text(" stack_peak=");
  put_uint(stack_peak_bytes);
  put_text(" model_weights=");
  put_uint(EDGEVIT_WEIGHTS_BYTES);
  put_text(" model_ram=");
  put_uint(EDGEVIT_RAM_BYTES);
  flush_line();
}

int main(void) {
  float probs[EDGEVIT_NUM_CLASSES] = {0};
  uint32_t peak = 0;
  int i, result, failed = 0;

  for (i = 0; i < EDGEVIT_TEST_IMAGES; i++) {
    stack_paint();
    edgevit_bench_begin();
    result = edgevit_classify(edgevit_test_images[i], probs);
    edgevit_bench_end();
    if (stack_peak() > peak) peak = stack_peak();
    if (result < 0) failed = 1;
    print_result(i, result, probs);
  }
  print_sizes(peak);
  return failed;
}
