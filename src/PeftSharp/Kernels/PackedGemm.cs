using System.Runtime.InteropServices;
using PeftSharp.Native;
using static TorchSharp.torch;
using static PeftSharp.Kernels.KernelSupport;

namespace PeftSharp.Kernels;

/// <summary>
/// MKL's packed GEMM (cblas_sgemm_pack / cblas_sgemm_compute), taken from the MKL inside libtorch_cpu. An sgemm copies
/// its B operand into the micro-kernel's panel layout at every call; a frozen weight packed once skips that copy at
/// every later call (the fp32 LoRA step 1.04x at 1024 tokens per step, 1.16-1.18x at 128-256: Memory/CpuRuntime.PackedWeightBytes has the figures and the price).
/// Row-major, fp32, one packed matrix per weight and orientation. The packed layout is MKL's own, valid for any row
/// count of the A operand (MKL documents m, n, k for both calls; a B packed with one m served other m's exactly in
/// PackedLinearTests), and is kept in an anonymous mapping: MKL's size query over-asks (~9 MiB for a 1 MiB weight)
/// and only the pages the layout touches become resident (one weight's bytes).
/// </summary>
internal static unsafe class PackedGemm
{
    const int RowMajor = 101, NoTrans = 111, Trans = 112, Packed = 151, BMatrix = 162;

    sealed class Api(nint getSize, nint pack, nint compute)
    {
        public readonly delegate* unmanaged[Cdecl]<int, int, int, int, nuint> GetSize = (delegate* unmanaged[Cdecl]<int, int, int, int, nuint>)getSize;
        public readonly delegate* unmanaged[Cdecl]<int, int, int, int, int, int, float, float*, int, float*, void> Pack =
            (delegate* unmanaged[Cdecl]<int, int, int, int, int, int, float, float*, int, float*, void>)pack;
        public readonly delegate* unmanaged[Cdecl]<int, int, int, int, int, int, float*, int, float*, int, float, float*, int, void> Compute =
            (delegate* unmanaged[Cdecl]<int, int, int, int, int, int, float*, int, float*, int, float, float*, int, void>)compute;
    }

    static readonly Lazy<Api?> Functions = new(Load);

    /// <summary>Whether this process's libtorch exports MKL's pack API (Linux x64 builds bundle MKL).</summary>
    public static bool Available => Functions.Value is not null;

    static Api? Load()
    {
        if (!OperatingSystem.IsLinux()) return null;
        MklCodePath.Ensure();   // loads libtorch; MKL's code path must be chosen before its first GEMM
        nint lib = Libc.LoadedLibrary("libtorch_cpu.so");
        if (lib == 0) return null;
        nint size = Libc.Symbol(lib, "cblas_sgemm_pack_get_size"), pack = Libc.Symbol(lib, "cblas_sgemm_pack"), compute = Libc.Symbol(lib, "cblas_sgemm_compute");
        if (size == 0 || pack == 0 || compute == 0) return null;
        return new(size, pack, compute);
    }

    /// <summary>Bytes MKL asks for a B operand of <paramref name="n"/> x <paramref name="k"/> packed for products of <paramref name="m"/> rows.</summary>
    internal static nint PackedSize(int m, int n, int k) => (nint)(Functions.Value ?? throw Unavailable()).GetSize(BMatrix, m, n, k);

    /// <summary>
    /// Packs a row-major B operand into <paramref name="dst"/> (<see cref="PackedSize"/> bytes): <paramref name="transposed"/>
    /// when <paramref name="src"/> holds B^T as [n, k] (x W^T with W [n, k]), else B as [k, n].
    /// </summary>
    internal static void PackB(bool transposed, int m, int n, int k, float* src, int ld, float* dst) =>
        (Functions.Value ?? throw Unavailable()).Pack(RowMajor, BMatrix, transposed ? Trans : NoTrans, m, n, k, 1f, src, ld, dst);

    /// <summary>C [m, n] (leading dimension ldc) = A [m, k] (lda) times a packed B, plus beta C.</summary>
    internal static void ComputePacked(int m, int n, int k, float* a, int lda, float* packedB, float beta, float* c, int ldc) =>
        (Functions.Value ?? throw Unavailable()).Compute(RowMajor, NoTrans, Packed, m, n, k, a, lda, packedB, n, beta, c, ldc);

    static InvalidOperationException Unavailable() => new("MKL's packed GEMM is not available in this libtorch");

    /// <summary>
    /// A weight W [out, in] packed as the B operand of one orientation: <c>forward</c> for x W^T (x [m, in] -> [m, out]),
    /// else for g W (g [m, out] -> [m, in]). Disposing unmaps it.
    /// </summary>
    internal sealed class PackedWeight : IDisposable
    {
        nint _data, _length;
        /// <summary>Columns of the product (out forward, in backward) and the inner dimension.</summary>
        public int N { get; }
        public int K { get; }

        public PackedWeight(Tensor weight, bool forward, int rows)
        {
            var api = Functions.Value ?? throw new InvalidOperationException("MKL's packed GEMM is not available in this libtorch");
            int o = checked((int)weight.shape[0]), i = checked((int)weight.shape[1]);
            (N, K) = forward ? (o, i) : (i, o);
            _length = (nint)api.GetSize(BMatrix, rows, N, K);
            _data = Libc.MapAnonymous(_length);
            if (_data == 0) throw new OutOfMemoryException($"could not map {_length} bytes for a packed [{o}, {i}] weight");
            using var w = weight.contiguous();
            api.Pack(RowMajor, BMatrix, forward ? Trans : NoTrans, rows, N, K, 1f, (float*)Address(w), i, (float*)_data);
        }

        /// <summary>a [.., K] (contiguous fp32) times the packed matrix: a new [.., N] tensor.</summary>
        public Tensor Times(Tensor a)
        {
            if (_data == 0) throw new ObjectDisposedException(nameof(PackedWeight));
            int m = checked((int)(a.numel() / K));
            var shape = a.shape.ToArray();
            shape[^1] = N;
            var c = empty(shape);
            Functions.Value!.Compute(RowMajor, NoTrans, Packed, m, N, K, (float*)Address(a), K, (float*)_data, N, 0f, (float*)Address(c), N);
            return c;
        }

        public void Dispose()
        {
            if (_data != 0) Libc.Unmap(_data, _length);
            _data = 0;
        }
    }
}
