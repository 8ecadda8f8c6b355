/* A QEMU TCG plugin that counts the guest instructions executed between two marker functions,
 * for instruction counts per inference without hardware (QEMU models no cycle timing: these are
 * instructions, not cycles).
 *
 *   qemu-system-arm ... -plugin ./insncount.so,begin=0xADDR,end=0xADDR
 *
 * Every time the instruction at `begin` is executed a window opens; when the instruction at `end`
 * is executed it closes and "insncount: N" (the instructions executed in between) goes to stderr.
 * Both markers are counted the same way, so N is the instructions from the first instruction of
 * `begin` up to the first of `end`, whichever order QEMU runs inline counters and callbacks in.
 *
 * Debian's qemu-system packages ship no qemu-plugin.h, so the few declarations used are restated
 * below; they are those of plugin API version 1 (QEMU 4.2 to 8.1; Debian 12 has 7.2). QEMU refuses
 * to load a plugin built for an API version it does not support, with a clear message.
 * Build: cc -O2 -shared -fPIC -o insncount.so insncount.c
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the subset of QEMU's include/qemu/qemu-plugin.h (API version 1) used here ---- */
#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* only passed through */
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn, enum qemu_plugin_op op, void *ptr,
                                                uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
/* ---- end of the QEMU declarations ---- */

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

static uint64_t executed;   /* every guest instruction, by an inline add (cheap: no call) */
static uint64_t window_start;
static bool window_open;
static uint64_t begin_addr = UINT64_MAX, end_addr = UINT64_MAX;

static void on_begin(unsigned int vcpu_index, void *userdata) {
  (void)vcpu_index, (void)userdata;
  window_start = executed;
  window_open = true;
}

static void on_end(unsigned int vcpu_index, void *userdata) {
  (void)vcpu_index, (void)userdata;
  if (!window_open) return;
  window_open = false;
  fprintf(stderr, "insncount: %" PRIu64 "\n", executed - window_start);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  size_t i, n = qemu_plugin_tb_n_insns(tb);
  (void)id;
  for (i = 0; i < n; i++) {
    struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
    uint64_t vaddr = qemu_plugin_insn_vaddr(insn);
    qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &executed, 1);
    if (vaddr == begin_addr)
      qemu_plugin_register_vcpu_insn_exec_cb(insn, on_begin, QEMU_PLUGIN_CB_NO_REGS, NULL);
    if (vaddr == end_addr)
      qemu_plugin_register_vcpu_insn_exec_cb(insn, on_end, QEMU_PLUGIN_CB_NO_REGS, NULL);
  }
}

static void at_exit(qemu_plugin_id_t id, void *userdata) {
  (void)id, (void)userdata;
  fprintf(stderr, "insncount: total %" PRIu64 "\n", executed);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
  int i;
  (void)info;
  for (i = 0; i < argc; i++) {
    /* Thumb symbol values have bit 0 set; instruction addresses never do */
    if (strncmp(argv[i], "begin=", 6) == 0) begin_addr = strtoull(argv[i] + 6, NULL, 0) & ~(uint64_t)1;
    else if (strncmp(argv[i], "end=", 4) == 0) end_addr = strtoull(argv[i] + 4, NULL, 0) & ~(uint64_t)1;
    else {
      fprintf(stderr, "insncount: unknown argument %s (begin=ADDR, end=ADDR)\n", argv[i]);
      return -1;
    }
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_atexit_cb(id, at_exit, NULL);
  return 0;
}
