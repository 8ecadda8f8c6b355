/* Start-up code for Armv7-M cores with an FPU (Cortex-M4F, Cortex-M7), in C.
 *
 * The core reads its initial stack pointer and reset address from the vector table at address 0.
 * Reset_Handler enables the FPU, copies .data from flash to RAM, zeroes .bss, runs main() and
 * hands its return value to board_exit(), so QEMU's exit status is main's. Any fault ends the run
 * with status 3 and the fault registers on the console, so a CI job fails instead of hanging.
 * No libc start-up (crt0) is used: link with -nostartfiles.
 */
#include <stdint.h>

#include "board.h"

/* Provided by the linker script (cortex-m.ld). */
extern uint32_t __stack_top[];
extern uint32_t __data_start[], __data_end[], __data_load[];
extern uint32_t __bss_start[], __bss_end[];

int main(void);
void Reset_Handler(void);
void Fault_Handler(void);
void Default_Handler(void);

/* System Control Block registers (Armv7-M ARM, B3.2). */
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SCB_HFSR (*(volatile uint32_t *)0xE000ED2Cu)
#define SCB_CFSR (*(volatile uint32_t *)0xE000ED28u)
#define SCB_MMFAR (*(volatile uint32_t *)0xE000ED34u)
#define SCB_BFAR (*(volatile uint32_t *)0xE000ED38u)

/* ---- semihosting ---- */
#define SYS_WRITE0 0x04
#define SYS_EXIT 0x18
#define SYS_EXIT_EXTENDED 0x20
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

static uint32_t semihosting(uint32_t operation, const void *argument) {
  register uint32_t r0 __asm__("r0") = operation;
  register const void *r1 __asm__("r1") = argument;
  /* "memory": the host reads (and may write) the block r1 points at */
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

void board_write(const char *text) { semihosting(SYS_WRITE0, text); }

_Noreturn void board_exit(int status) {
  /* SYS_EXIT on 32-bit Arm carries only "stopped/failed"; the extended call carries the status */
  const uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)status};
  semihosting(SYS_EXIT_EXTENDED, block);
  for (;;) __asm__ volatile("wfi");
}

/* ---- reset ---- */
/* Everything after the FPU is on lives in its own function: with -mfloat-abi=hard the compiler may
 * use FP registers anywhere (even to copy memory), and before CPACR grants access to coprocessors
 * 10 and 11 any FP instruction raises a UsageFault (NOCP). */
static __attribute__((noinline, noreturn)) void reset_continue(void) {
  uint32_t *src = __data_load, *dst = __data_start;
  while (dst < __data_end) *dst++ = *src++;
  for (dst = __bss_start; dst < __bss_end; dst++) *dst = 0;
  board_exit(main());
}

void Reset_Handler(void) {
  SCB_CPACR |= 0xFu << 20; /* CP10 and CP11 (the FPU): full access */
  /* the write must complete (DSB) and later instructions be fetched after it (ISB) */
  __asm__ volatile("dsb\n\tisb" ::: "memory");
  reset_continue();
}

/* ---- faults ---- */
static void write_hex(const char *label, uint32_t value) {
  char text[24];
  int i = 0, shift;
  while (*label) text[i++] = *label++;
  for (shift = 28; shift >= 0; shift -= 4) text[i++] = "0123456789abcdef"[(value >> shift) & 0xFu];
  text[i] = '\0';
  board_write(text);
}

/* Runs on a fresh stack: after a stack overflow SP points below RAM, and the first push in C
 * would fault again and lock the core up. */
static __attribute__((noreturn, used)) void fault_report(void) {
  board_write("edgevit board: fault:");
  write_hex(" HFSR=0x", SCB_HFSR);
  write_hex(" CFSR=0x", SCB_CFSR);
  write_hex(" MMFAR=0x", SCB_MMFAR);
  write_hex(" BFAR=0x", SCB_BFAR);
  board_write(" (stack overflow: a fault just below the RAM origin; in QEMU, where unmapped memory reads as 0, usually INVSTATE from a return to address 0)\n");
  board_exit(3);
}

__attribute__((naked)) void Fault_Handler(void) {
  /* the program cannot continue: reuse the whole stack for the report */
  __asm__ volatile("ldr r0, =__stack_top\n\tmov sp, r0\n\tb fault_report");
}

void Default_Handler(void) {
  board_write("edgevit board: unexpected interrupt\n");
  board_exit(4);
}

/* ---- vector table ---- */
/* 16 system entries, then the board's external interrupts (QEMU's MPS2 NVIC has 32; none is
 * enabled here, but a complete table turns a stray interrupt into a report rather than a jump to
 * address 0). */
#define EXTERNAL_INTERRUPTS 32

typedef void (*vector_t)(void);

__attribute__((section(".vectors"), used)) static const vector_t vector_table[16 + EXTERNAL_INTERRUPTS] = {
    (vector_t)(uintptr_t)__stack_top, /* 0: initial main stack pointer */
    Reset_Handler,                    /* 1 */
    Default_Handler,                  /* 2: NMI */
    Fault_Handler,                    /* 3: HardFault */
    Fault_Handler,                    /* 4: MemManage */
    Fault_Handler,                    /* 5: BusFault */
    Fault_Handler,                    /* 6: UsageFault */
    0, 0, 0, 0,                       /* 7-10: reserved */
    Default_Handler,                  /* 11: SVCall */
    Default_Handler,                  /* 12: DebugMonitor */
    0,                                /* 13: reserved */
    Default_Handler,                  /* 14: PendSV */
    Default_Handler,                  /* 15: SysTick */
    [16 ... 16 + EXTERNAL_INTERRUPTS - 1] = Default_Handler,
};
