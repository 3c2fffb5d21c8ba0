using System.Runtime.InteropServices;
using System.Text;

namespace PeftSharp.Native;

/// <summary>
/// The GOT slots through which a loaded x86-64 ELF shared library reaches a function it imports (its calls go through
/// the PLT's JUMP_SLOT entry, a taken address through a GLOB_DAT one), read from the library's own image in memory:
/// its program headers, its dynamic section and its relocation tables. Writing another address into those slots
/// redirects that one library's calls and nobody else's, which is what an in-process LD_PRELOAD for one library needs.
/// </summary>
internal static unsafe partial class ImportSlots
{
    /// <summary>One slot: its address in the process, and whether the loader made its page read-only (RELRO).</summary>
    public readonly record struct Slot(nint Address, bool ReadOnly);

    const ushort MachineX86_64 = 62;
    const uint PtLoad = 1, PtDynamic = 2, PtGnuRelro = 0x6474e552;
    const long DtNull = 0, DtPltRelSz = 2, DtStrTab = 5, DtSymTab = 6, DtRela = 7, DtRelaSz = 8, DtJmpRel = 23;
    const uint RX86_64_64 = 1, RX86_64_GlobDat = 6, RX86_64_JumpSlot = 7;

    /// <summary>
    /// The slots of <paramref name="symbol"/> in the library that contains <paramref name="addressInLibrary"/> (any
    /// function it exports). False with the reason where that is not a 64-bit x86-64 ELF image or imports no such symbol.
    /// </summary>
    public static bool TryFind(nint addressInLibrary, string symbol, out List<Slot> slots, out string why)
    {
        slots = [];
        if (!Libc.LibraryOf(addressInLibrary, out var info) || info.Base == 0) { why = "dladdr found no library"; return false; }
        byte* image = (byte*)info.Base;
        if (*(uint*)image != 0x464C457F || image[4] != 2 || *(ushort*)(image + 18) != MachineX86_64)
        {
            why = "not a 64-bit x86-64 ELF image";
            return false;
        }
        byte* headers = image + *(long*)(image + 32);
        int count = *(ushort*)(image + 56), size = *(ushort*)(image + 54);
        // dli_fbase is where the first PT_LOAD segment was mapped; the load bias is that minus its (page) address.
        long firstLoad = -1, dynamic = -1, relroStart = 0, relroEnd = 0, span = 0;
        for (int i = 0; i < count; i++)
        {
            byte* h = headers + i * size;
            uint type = *(uint*)h;
            long vaddr = *(long*)(h + 16), memsz = *(long*)(h + 40);
            if (type == PtLoad) { if (firstLoad < 0) firstLoad = vaddr & ~0xFFFL; span = Math.Max(span, vaddr + memsz); }
            else if (type == PtDynamic) dynamic = vaddr;
            else if (type == PtGnuRelro) (relroStart, relroEnd) = (vaddr, vaddr + memsz);
        }
        if (firstLoad < 0 || dynamic < 0) { why = "no loadable dynamic segment"; return false; }
        nint bias = info.Base - (nint)firstLoad;
        long strtab = 0, symtab = 0, rela = 0, relaSize = 0, jmprel = 0, jmprelSize = 0;
        for (long* d = (long*)(bias + (nint)dynamic); d[0] != DtNull; d += 2)
        {
            switch (d[0])
            {
                case DtStrTab: strtab = d[1]; break;
                case DtSymTab: symtab = d[1]; break;
                case DtRela: rela = d[1]; break;
                case DtRelaSz: relaSize = d[1]; break;
                case DtJmpRel: jmprel = d[1]; break;
                case DtPltRelSz: jmprelSize = d[1]; break;
            }
        }
        // glibc relocates these addresses in the loaded dynamic section, other loaders leave them image-relative.
        nint Absolute(long a) => a >= 0 && a < span ? bias + (nint)a : (nint)a;
        if (strtab == 0 || symtab == 0) { why = "no dynamic symbol table"; return false; }
        byte* names = (byte*)Absolute(strtab), symbols = (byte*)Absolute(symtab);
        byte[] wanted = Encoding.ASCII.GetBytes(symbol);
        foreach (var (table, bytes) in new[] { (rela, relaSize), (jmprel, jmprelSize) })
        {
            if (table == 0) continue;
            byte* entries = (byte*)Absolute(table);
            for (long at = 0; at + 24 <= bytes; at += 24)
            {
                long offset = *(long*)(entries + at);
                ulong info64 = *(ulong*)(entries + at + 8);
                uint type = (uint)info64, index = (uint)(info64 >> 32);
                if (index == 0 || type is not (RX86_64_JumpSlot or RX86_64_GlobDat or RX86_64_64)) continue;
                if (*(long*)(entries + at + 16) != 0) continue;   // symbol + addend: not a plain pointer to it
                var name = MemoryMarshal.CreateReadOnlySpanFromNullTerminated(names + *(uint*)(symbols + index * 24L));
                if (!name.SequenceEqual(wanted)) continue;
                slots.Add(new Slot(bias + (nint)offset, offset >= relroStart && offset < relroEnd));
            }
        }
        why = slots.Count == 0 ? $"the library imports no {symbol}" : "";
        return slots.Count > 0;
    }

    /// <summary>
    /// Writes <paramref name="target"/> into a slot (one aligned 8-byte store: a thread calling through it at that moment
    /// gets the old or the new address), making a read-only page writable for the write and read-only again after.
    /// </summary>
    public static bool Write(Slot slot, nint target, out string why)
    {
        nint page = Environment.SystemPageSize;
        nint start = slot.Address & ~(page - 1);
        if (Libc.Protect(start, page, Libc.ProtRead | Libc.ProtWrite) != 0)
        {
            why = $"mprotect refused, errno {Marshal.GetLastPInvokeError()}";
            return false;
        }
        Volatile.Write(ref *(nint*)slot.Address, target);
        if (slot.ReadOnly) Libc.Protect(start, page, Libc.ProtRead);
        why = "";
        return true;
    }
}
