/* What this x86-64 CPU and its OS let a program run: CPUID for the instruction sets, XGETBV for the register state
 * the OS saves (an instruction set whose registers the OS does not save is unusable), and on Linux arch_prctl for
 * AMX, whose tile data the kernel hands out only to a process that asks (ARCH_REQ_XCOMP_PERM); whether the kernel
 * would grant it is ARCH_GET_XCOMP_SUPP, which asks nothing. On other machines every answer is 0. */
#ifndef CAPTIONKIT_CPU_H
#define CAPTIONKIT_CPU_H

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CK_CPU_X86 1
#include <cpuid.h>
#else
#define CK_CPU_X86 0
#endif

#if CK_CPU_X86 && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define CK_ARCH_GET_XCOMP_SUPP 0x1021
#endif

/* Registers eax, ebx, ecx, edx of CPUID leaf.subleaf into regs; 0 when the leaf does not exist. */
static inline int ck_cpuid(unsigned int leaf, unsigned int subleaf, unsigned int regs[4])
{
    regs[0] = regs[1] = regs[2] = regs[3] = 0;
#if CK_CPU_X86
    return __get_cpuid_count(leaf, subleaf, &regs[0], &regs[1], &regs[2], &regs[3]);
#else
    return 0;
#endif
}

/* XCR0, the register state the OS saves on a context switch; 0 when the OS has not enabled XGETBV (OSXSAVE). */
static inline uint64_t ck_xcr0(void)
{
#if CK_CPU_X86
    unsigned int regs[4];
    if (!ck_cpuid(1, 0, regs) || !(regs[2] & (1u << 27)))
        return 0;
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
#else
    return 0;
#endif
}

/* The extended state components the Linux kernel supports handing to processes (bit 18: AMX tile data); 0 where
 * the kernel is too old to say, or this is not Linux on x86-64. */
static inline uint64_t ck_os_xcomp_supported(void)
{
#if CK_CPU_X86 && defined(__linux__)
    uint64_t mask = 0;
    if (syscall(SYS_arch_prctl, CK_ARCH_GET_XCOMP_SUPP, &mask) != 0)
        return 0;
    return mask;
#else
    return 0;
#endif
}

/* The processor's name (CPUID 0x80000002-4), at most 48 characters, into name[49]. */
static inline void ck_cpu_brand(char name[49])
{
    unsigned int regs[4];
    memset(name, 0, 49);
    for (unsigned int i = 0; i < 3; i++) {
        if (!ck_cpuid(0x80000002u + i, 0, regs))
            return;
        memcpy(name + 16 * i, regs, 16);
    }
}

#endif
