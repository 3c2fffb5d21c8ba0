using System.Runtime.InteropServices;

namespace PeftSharp.Native;

/// <summary>
/// The few glibc calls the native glue needs (Kernels/TorchThreads finds libtorch's OpenMP entry, Kernels/MklCodePath
/// rewrites a function's first bytes, <see cref="ImportSlots"/> rewrites libc10's GOT slots, <see cref="TensorBlockCache"/>
/// maps its blocks and moves pages between them, Quantization/Nf4PanelTile shares pages between tiles): finding a library already loaded and its symbols, changing a page's
/// protection around a write, anonymous mappings and memory files. Linux only; callers check the OS.
/// </summary>
internal static unsafe partial class Libc
{
    public const int ProtRead = 1, ProtWrite = 2, ProtExec = 4;
    const int RtldLazy = 1, RtldNoLoad = 4;

    /// <summary>The handle of <paramref name="file"/> if the process has already loaded it (never loads it), else 0; also 0
    /// where the C library has no dlopen (not glibc).</summary>
    public static nint LoadedLibrary(string file)
    {
        try { return dlopen(file, RtldLazy | RtldNoLoad); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return 0; }
    }

    /// <summary>A symbol's address in a library handle (0: RTLD_DEFAULT, the global lookup order), or 0.</summary>
    public static nint Symbol(nint handle, string symbol) => dlsym(handle, symbol);

    /// <summary>mprotect(2); 0 on success, else -1 with errno in <see cref="Marshal.GetLastPInvokeError"/>.</summary>
    public static int Protect(nint address, nint length, int protection) => mprotect(address, length, protection);

    /// <summary>dladdr(3)'s answer: the file and load address of the library holding an address.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct AddressInfo { public nint FileName, Base, SymbolName, SymbolAddress; }

    /// <summary>The library holding <paramref name="address"/>; false where none does.</summary>
    public static bool LibraryOf(nint address, out AddressInfo info)
    {
        AddressInfo found;
        bool ok = dladdr(address, &found) != 0;
        info = found;
        return ok;
    }

    /// <summary>A new private anonymous read-write mapping of <paramref name="length"/> bytes (its pages are faulted in, zeroed, on
    /// first touch), or 0 where mmap failed.</summary>
    public static nint MapAnonymous(nint length)
    {
        const int MapPrivate = 0x02, MapAnonymous = 0x20;
        nint p = mmap(0, length, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
        return p == -1 ? 0 : p;
    }

    /// <summary>
    /// Maps [<paramref name="offset"/>, +<paramref name="length"/>) of file <paramref name="fd"/> shared and read-write
    /// exactly at <paramref name="address"/> (MAP_FIXED: it replaces what was mapped there); false where mmap failed.
    /// </summary>
    public static bool MapFileAt(nint address, nint length, int fd, nint offset)
    {
        const int MapShared = 0x01, MapFixed = 0x10;
        return mmap(address, length, ProtRead | ProtWrite, MapShared | MapFixed, fd, offset) == address;
    }

    /// <summary>An empty anonymous memory file (memfd_create(2)), or -1; <see cref="Resize"/> gives it its size.</summary>
    public static int MemoryFile(string name) => memfd_create(name, 0) is var fd && fd >= 0 ? fd : -1;

    /// <summary>Grows or shrinks a file to <paramref name="bytes"/> (ftruncate(2)); false where it failed.</summary>
    public static bool Resize(int fd, long bytes) => ftruncate(fd, bytes) == 0;

    /// <summary>close(2).</summary>
    public static void Close(int fd) => close(fd);

    /// <summary>munmap(2); 0 on success.</summary>
    public static int Unmap(nint address, nint length) => munmap(address, length);

    /// <summary>
    /// Moves the pages of [<paramref name="from"/>, +<paramref name="length"/>) to <paramref name="to"/> (mremap(2) with
    /// MREMAP_MAYMOVE | MREMAP_FIXED): the page tables move, the pages are neither copied nor faulted in again; whatever
    /// was mapped at the destination is replaced and the source range is left unmapped. False where the kernel refused
    /// (e.g. a source range over more than one mapping on kernels before 6.17); nothing moved then.
    /// </summary>
    public static bool MovePages(nint from, nint length, nint to)
    {
        const int MremapMayMove = 1, MremapFixed = 2;
        return mremap(from, length, length, MremapMayMove | MremapFixed, to) == to;
    }

    [LibraryImport("libc", EntryPoint = "mmap")]
    private static partial nint mmap(nint addr, nint length, int prot, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "memfd_create", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int memfd_create(string name, uint flags);

    [LibraryImport("libc", EntryPoint = "ftruncate")]
    private static partial int ftruncate(int fd, long length);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int close(int fd);

    [LibraryImport("libc", EntryPoint = "munmap")]
    private static partial int munmap(nint addr, nint length);

    [LibraryImport("libc", EntryPoint = "mremap")]
    private static partial nint mremap(nint oldAddress, nint oldLength, nint newLength, int flags, nint newAddress);

    [LibraryImport("libc", EntryPoint = "dlopen", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint dlopen(string file, int mode);

    [LibraryImport("libc", EntryPoint = "dlsym", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint dlsym(nint handle, string symbol);

    [LibraryImport("libc", EntryPoint = "dladdr")]
    private static partial int dladdr(nint address, AddressInfo* info);

    [LibraryImport("libc", EntryPoint = "mprotect", SetLastError = true)]
    private static partial int mprotect(nint addr, nint length, int prot);
}
