"""The compiled probe behind captionkit.cpu: raw CPUID, XCR0 and the Linux kernel's AMX support (_cpu.h)."""
from libc.stdint cimport uint64_t


cdef extern from "_cpu.h" nogil:
    bint CK_CPU_X86
    int ck_cpuid(unsigned int leaf, unsigned int subleaf, unsigned int regs[4])
    uint64_t ck_xcr0()
    uint64_t ck_os_xcomp_supported()
    void ck_cpu_brand(char name[49])


def is_x86():
    """Whether this build can ask an x86-64 CPU (every other answer here is zero when not)."""
    return bool(CK_CPU_X86)


def cpuid(unsigned int leaf, unsigned int subleaf=0):
    """(eax, ebx, ecx, edx) of CPUID leaf.subleaf, or None when the CPU has no such leaf."""
    cdef unsigned int regs[4]
    if not ck_cpuid(leaf, subleaf, regs):
        return None
    return regs[0], regs[1], regs[2], regs[3]


def xcr0():
    """XCR0: the register state the OS saves (0 when the OS has not enabled XSAVE)."""
    return ck_xcr0()


def os_xcomp_supported():
    """The extended state components the Linux kernel can grant (ARCH_GET_XCOMP_SUPP); 0 when it cannot say."""
    return ck_os_xcomp_supported()


def brand():
    """The processor's name as the CPU gives it."""
    cdef char name[49]
    ck_cpu_brand(name)
    return name.decode("ascii", "replace").strip()
