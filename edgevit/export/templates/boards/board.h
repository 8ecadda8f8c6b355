/* Board support for running EdgeViT on Cortex-M under QEMU (or a debugger): console output and
 * exit over Arm semihosting. Semihosting traps to the debugger with BKPT 0xAB; on a board with no
 * debugger attached that BKPT faults, so a product would send these lines to a UART instead. */
#ifndef EDGEVIT_BOARD_H
#define EDGEVIT_BOARD_H

/* Writes a NUL-terminated string to the host's console (semihosting SYS_WRITE0). */
void board_write(const char *text);

/* Ends the program: QEMU exits with this status (semihosting SYS_EXIT_EXTENDED). */
_Noreturn void board_exit(int status);

#endif
