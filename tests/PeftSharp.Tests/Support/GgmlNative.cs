using System.Runtime.InteropServices;

namespace PeftSharp.Tests.Support;

/// <summary>
/// ggml's own type traits from the libggml-base that LLamaSharp loaded (the library llama.cpp itself runs with):
/// <c>to_float</c> (the dequantiser) and <c>ggml_quantize_chunk</c>, the oracles of GgufDequant.
/// </summary>
public static class GgmlNative
{
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    delegate void ToFloatFn(IntPtr x, IntPtr y, long k);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    delegate IntPtr TypeTraitsFn(int type);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    delegate UIntPtr QuantizeChunkFn(int type, IntPtr src, IntPtr dst, long start, long nrows, long nPerRow, IntPtr imatrix);

    static readonly Lazy<IntPtr> Library = new(() =>
    {
        // LLamaSharp picks the build for this CPU (noavx/avx/avx2/avx512) and loads it: use that very file.
        string? path = File.ReadLines("/proc/self/maps").Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Where(p => p.Length >= 6 && p[^1].EndsWith("/libggml-base.so", StringComparison.Ordinal)).Select(p => p[^1]).FirstOrDefault();
        if (path is null) throw new InvalidOperationException("libggml-base.so is not loaded; construct a LlamaCpp first");
        return NativeLibrary.Load(path);
    });

    /// <summary>The loaded library's path (for messages).</summary>
    public static string LoadedPath => File.ReadLines("/proc/self/maps").Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        .Where(p => p.Length >= 6 && p[^1].EndsWith("/libggml-base.so", StringComparison.Ordinal)).Select(p => p[^1]).First();

    static T Fn<T>(string name) where T : Delegate => Marshal.GetDelegateForFunctionPointer<T>(NativeLibrary.GetExport(Library.Value, name));

    /// <summary>
    /// ggml_type_traits { const char* type_name; int64 blck_size; int64 blck_size_interleave; size_t type_size;
    /// bool is_quantized; to_float; from_float_ref }: the fields are checked against what the type must be, so a
    /// different struct layout fails loudly instead of calling a wrong pointer.
    /// </summary>
    public static void ToFloat(uint type, string expectName, long blockSize, long typeSize, byte[] src, float[] dst)
    {
        IntPtr traits = Fn<TypeTraitsFn>("ggml_get_type_traits")((int)type);
        string? name = Marshal.PtrToStringUTF8(Marshal.ReadIntPtr(traits, 0));
        long blck = Marshal.ReadInt64(traits, 8), size = Marshal.ReadInt64(traits, 24);
        if (name != expectName || blck != blockSize || size != typeSize)
            throw new InvalidOperationException($"ggml_type_traits layout unexpected: {name} {blck} {size} (wanted {expectName} {blockSize} {typeSize})");
        var fn = Marshal.GetDelegateForFunctionPointer<ToFloatFn>(Marshal.ReadIntPtr(traits, 40));
        var hs = GCHandle.Alloc(src, GCHandleType.Pinned);
        var hd = GCHandle.Alloc(dst, GCHandleType.Pinned);
        try { fn(hs.AddrOfPinnedObject(), hd.AddrOfPinnedObject(), dst.Length); }
        finally { hs.Free(); hd.Free(); }
    }

    /// <summary>ggml_quantize_chunk without an importance matrix: what llama-quantize writes for these values.</summary>
    public static byte[] Quantize(uint type, float[] src, long rows, long perRow, long bytes)
    {
        var dst = new byte[bytes];
        var hs = GCHandle.Alloc(src, GCHandleType.Pinned);
        var hd = GCHandle.Alloc(dst, GCHandleType.Pinned);
        try
        {
            ulong n = (ulong)Fn<QuantizeChunkFn>("ggml_quantize_chunk")((int)type, hs.AddrOfPinnedObject(), hd.AddrOfPinnedObject(), 0, rows, perRow, IntPtr.Zero);
            if ((long)n != bytes) throw new InvalidOperationException($"ggml_quantize_chunk wrote {n} bytes, expected {bytes}");
        }
        finally { hs.Free(); hd.Free(); }
        return dst;
    }
}
