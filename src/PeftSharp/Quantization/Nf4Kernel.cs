using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// One-pass CPU dequantisation: packed 4-bit codes + float absmax -> fp32/bf16/fp16 written straight into the
/// destination buffer. Per block the 16 codes are scaled once (code * absmax, the same float product the
/// reference and the TorchSharp path compute, so results are bitwise equal); AVX-512 then looks 16 nibbles up with
/// one permute of the whole table, AVX2 with two 8-entry permutes and a blend.
/// </summary>
internal static unsafe class Nf4Kernel
{
    /// <summary>The instruction set the kernel runs on this CPU.</summary>
    public static string Isa => Avx512F.IsSupported && Avx512BW.IsSupported ? "AVX-512" : Avx2.IsSupported ? "AVX2" : "scalar";

    public static bool Supports(ScalarType t) => t is ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16;

    /// <summary>Bytes per value the kernel writes in <paramref name="dtype"/> (one it <see cref="Supports"/>).</summary>
    public static int ElementBytes(ScalarType dtype) => dtype == ScalarType.Float32 ? 4 : 2;

    public static void Dequantize(ReadOnlySpan<byte> packed, ReadOnlySpan<float> absmax, int blockSize, ReadOnlySpan<float> code, Span<byte> dst, ScalarType dtype)
    {
        long n = (long)packed.Length * 2;
        if (blockSize % 16 != 0 || n % blockSize != 0 || absmax.Length != n / blockSize)
            throw new ArgumentException($"{n} values with block size {blockSize} need {n / blockSize} absmax values, got {absmax.Length}");
        if (!Supports(dtype)) throw new NotSupportedException($"the CPU kernel writes fp32, bf16 or fp16, not {dtype}");
        int elem = ElementBytes(dtype);
        if (dst.Length != n * elem) throw new ArgumentException($"destination has {dst.Length} bytes, {n * elem} needed");
        DequantizeBlocks(packed, absmax, blockSize, code, 0, dst, dtype, ThreadsFor(n));
    }

    /// <summary>
    /// Threads for a whole weight of <paramref name="n"/> values. Blocks are independent: a whole weight is split over
    /// torch's intra-op threads, as the matmul that reads the result is, so the dequantisation is not the one
    /// single-threaded pass of a QLoRA layer; small weights stay on the calling thread (a task costs more than their pass).
    /// </summary>
    public static int ThreadsFor(long n) => (int)Math.Clamp(n / ParallelMinElements, 1, Math.Max(1, MaxThreads ?? get_num_threads()));

    /// <summary>
    /// Blocks [<paramref name="fromBlock"/>, fromBlock + dst / block) of the weight into <paramref name="dst"/>
    /// (a tile of consecutive rows when the tile is a whole number of blocks), split over at most
    /// <paramref name="threads"/> threads; <paramref name="absmax"/> is the whole weight's.
    /// </summary>
    public static void DequantizeBlocks(ReadOnlySpan<byte> packed, ReadOnlySpan<float> absmax, int blockSize, ReadOnlySpan<float> code,
        long fromBlock, Span<byte> dst, ScalarType dtype, int threads)
    {
        if (code.Length != 16) throw new ArgumentException($"a 4-bit code table has 16 entries, got {code.Length}");
        if (!Supports(dtype)) throw new NotSupportedException($"the CPU kernel writes fp32, bf16 or fp16, not {dtype}");
        int elem = ElementBytes(dtype);
        long perBlock = (long)blockSize * elem;
        if (blockSize % 16 != 0 || dst.Length % perBlock != 0)
            throw new ArgumentException($"destination of {dst.Length} bytes is not a whole number of {blockSize}-value blocks of {dtype}");
        long blocks = dst.Length / perBlock;
        if (fromBlock < 0 || fromBlock + blocks > absmax.Length || (fromBlock + blocks) * blockSize > (long)packed.Length * 2)
            throw new ArgumentException($"blocks [{fromBlock}, {fromBlock + blocks}) outside a weight of {absmax.Length} blocks");

        fixed (byte* p = packed)
        fixed (float* a = absmax)
        fixed (float* c = code)
        fixed (byte* d = dst)
        {
            int chunks = (int)Math.Clamp(threads, 1, Math.Max(1, blocks));
            if (chunks == 1) { RunRange(p, a, c, d, fromBlock, fromBlock + blocks, blockSize, dtype); return; }
            nint pp = (nint)p, pa = (nint)a, pc = (nint)c, pd = (nint)d;
            Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = chunks }, i =>
            {
                long from = blocks * i / chunks, to = blocks * (i + 1) / chunks;
                RunRange((byte*)pp, (float*)pa, (float*)pc, (byte*)pd + from * perBlock, fromBlock + from, fromBlock + to, blockSize, dtype);
            });
        }
    }

    /// <summary>At most this many threads per dequantisation; null: torch's intra-op thread count (the qlora-step bench's --dequant-threads).</summary>
    internal static int? MaxThreads { get; set; }

    /// <summary>Below this many weights one thread dequantises the whole tensor.</summary>
    const long ParallelMinElements = 1 << 18;

    /// <summary>Blocks [from, to) of the weight into <paramref name="dst"/>, which points at block <paramref name="from"/>'s output.</summary>
    static void RunRange(byte* p, float* absmax, float* code, byte* dst, long from, long to, int blockSize, ScalarType dtype)
    {
        long first = from * blockSize, count = (to - from) * blockSize;
        byte* pb = p + first / 2;
        if (Avx512F.IsSupported && Avx512BW.IsSupported && blockSize % 32 == 0)
        {
            if (dtype == ScalarType.Float32) Run512(pb, absmax + from, code, (float*)dst, count, blockSize);
            else RunHalf512(pb, absmax + from, code, (ushort*)dst, count, blockSize, dtype == ScalarType.BFloat16);
        }
        else if (dtype == ScalarType.Float32) Run(pb, absmax + from, code, (float*)dst, count, blockSize);
        else RunHalf(pb, absmax + from, code, (ushort*)dst, count, blockSize, dtype == ScalarType.BFloat16);
    }


    static void Run(byte* p, float* absmax, float* code, float* o, long n, int blockSize)
    {
        long blocks = n / blockSize;
        int half = blockSize / 2;
        if (Avx2.IsSupported)
        {
            var c0 = Avx.LoadVector256(code);
            var c1 = Avx.LoadVector256(code + 8);
            var nibble = Vector256.Create(15);
            for (long b = 0; b < blocks; b++)
            {
                var s = Vector256.Create(absmax[b]);
                var t0 = Avx.Multiply(c0, s);
                var t1 = Avx.Multiply(c1, s);
                byte* pb = p + b * half;
                float* ob = o + b * blockSize;
                for (int j = 0; j < half; j += 8)
                {
                    var v = Avx2.ConvertToVector256Int32(Vector128.CreateScalarUnsafe(*(ulong*)(pb + j)).AsByte());
                    var hi = Avx2.ShiftRightLogical(v, 4);
                    var lo = Avx2.And(v, nibble);
                    var x = Avx2.UnpackLow(hi, lo);   // h0 l0 h1 l1 | h4 l4 h5 l5
                    var y = Avx2.UnpackHigh(hi, lo);  // h2 l2 h3 l3 | h6 l6 h7 l7
                    Avx.Store(ob + 2 * j, Lookup(t0, t1, Avx2.Permute2x128(x, y, 0x20)));
                    Avx.Store(ob + 2 * j + 8, Lookup(t0, t1, Avx2.Permute2x128(x, y, 0x31)));
                }
            }
            return;
        }
        float* table = stackalloc float[16];
        for (long b = 0; b < blocks; b++)
        {
            float s = absmax[b];
            for (int k = 0; k < 16; k++) table[k] = code[k] * s;
            byte* pb = p + b * half;
            float* ob = o + b * blockSize;
            for (int j = 0; j < half; j++)
            {
                ob[2 * j] = table[pb[j] >> 4];
                ob[2 * j + 1] = table[pb[j] & 15];
            }
        }
    }

    /// <summary>
    /// AVX-512: the whole 16-entry table of scaled codes sits in one register, so a nibble lookup is one vpermps;
    /// 16 packed bytes are split into 32 interleaved nibbles (high first) with byte ops and widened 16 at a time.
    /// </summary>
    static void Run512(byte* p, float* absmax, float* code, float* o, long n, int blockSize)
    {
        long blocks = n / blockSize;
        int half = blockSize / 2;
        var c = Vector512.Load(code);
        for (long b = 0; b < blocks; b++)
        {
            var t = Avx512F.Multiply(c, Vector512.Create(absmax[b]));
            byte* pb = p + b * half;
            float* ob = o + b * blockSize;
            for (int j = 0; j < half; j += 16)
            {
                var (i0, i1) = Nibbles(pb + j);
                Avx512F.Store(ob + 2 * j, Avx512F.PermuteVar16x32(t, i0));
                Avx512F.Store(ob + 2 * j + 16, Avx512F.PermuteVar16x32(t, i1));
            }
        }
    }

    /// <summary>As <see cref="Run512"/> with the table rounded once per block to bf16/fp16 (as <see cref="RunHalf"/> explains).</summary>
    static void RunHalf512(byte* p, float* absmax, float* code, ushort* o, long n, int blockSize, bool bf16)
    {
        long blocks = n / blockSize;
        int half = blockSize / 2;
        var c = Vector512.Load(code);
        int* table = stackalloc int[16];
        for (long b = 0; b < blocks; b++)
        {
            float s = absmax[b];
            Vector512<int> t;
            if (bf16)
            {
                t = Kernels.VectorMath.Bf16Bits(Avx512F.Multiply(c, Vector512.Create(s))).AsInt32();
            }
            else
            {
                for (int k = 0; k < 16; k++) table[k] = BitConverter.HalfToUInt16Bits((Half)(code[k] * s));
                t = Vector512.Load(table);
            }
            // The table's 16-bit values sit in the low half of each int: vpmovdw keeps exactly those, and vpermw then
            // looks 32 nibbles up at once.
            var t16 = Avx512F.ConvertToVector256UInt16(t.AsUInt32()).ToVector512();
            byte* pb = p + b * half;
            ushort* ob = o + b * blockSize;
            for (int j = 0; j < half; j += 16)
            {
                var (lo, hi) = NibbleBytes(pb + j);
                Avx512F.Store(ob + 2 * j, Avx512BW.PermuteVar32x16(t16, Avx512BW.ConvertToVector512UInt16(Vector256.Create(lo, hi))));
            }
        }
    }

    /// <summary>16 packed bytes -> 32 code indices in output order (byte k gives index 2k = high nibble, 2k+1 = low), as ints.</summary>
    static (Vector512<int>, Vector512<int>) Nibbles(byte* src)
    {
        var (first, second) = NibbleBytes(src);
        return (Avx512F.ConvertToVector512Int32(first), Avx512F.ConvertToVector512Int32(second));
    }

    /// <summary>16 packed bytes -> indices 0-15 and 16-31 of <see cref="Nibbles"/> as bytes.</summary>
    static (Vector128<byte>, Vector128<byte>) NibbleBytes(byte* src)
    {
        var v = Vector128.Load(src);
        var mask = Vector128.Create((byte)15);
        var hi = Vector128.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & mask;
        var lo = v & mask;
        return (Sse2.UnpackLow(hi, lo), Sse2.UnpackHigh(hi, lo));
    }

    /// <summary>
    /// 16-bit outputs: rounding commutes with the lookup, so each block's 16 scaled codes are rounded once to
    /// bf16/fp16 and the nibbles pick from that table (identical bits to rounding every element).
    /// </summary>
    static void RunHalf(byte* p, float* absmax, float* code, ushort* o, long n, int blockSize, bool bf16)
    {
        long blocks = n / blockSize;
        int half = blockSize / 2;
        int* table = stackalloc int[16];
        var nibble = Vector256.Create(15);
        bool simd = Avx2.IsSupported;
        var c0 = simd ? Avx.LoadVector256(code) : default;
        var c1 = simd ? Avx.LoadVector256(code + 8) : default;
        for (long b = 0; b < blocks; b++)
        {
            float s = absmax[b];
            byte* pb = p + b * half;
            ushort* ob = o + b * blockSize;
            if (!simd)
            {
                for (int k = 0; k < 16; k++) table[k] = bf16 ? Kernels.VectorMath.Bf16Bits(code[k] * s) : BitConverter.HalfToUInt16Bits((Half)(code[k] * s));
                for (int j = 0; j < half; j++) { ob[2 * j] = (ushort)table[pb[j] >> 4]; ob[2 * j + 1] = (ushort)table[pb[j] & 15]; }
                continue;
            }
            Vector256<float> t0, t1;
            if (bf16)
            {
                var sv = Vector256.Create(s);
                t0 = Bf16(Avx.Multiply(c0, sv)).AsSingle();
                t1 = Bf16(Avx.Multiply(c1, sv)).AsSingle();
            }
            else
            {
                for (int k = 0; k < 16; k++) table[k] = BitConverter.HalfToUInt16Bits((Half)(code[k] * s));
                t0 = Avx.LoadVector256(table).AsSingle();
                t1 = Avx.LoadVector256(table + 8).AsSingle();
            }
            for (int j = 0; j < half; j += 8)
            {
                var v = Avx2.ConvertToVector256Int32(Vector128.CreateScalarUnsafe(*(ulong*)(pb + j)).AsByte());
                var hi = Avx2.ShiftRightLogical(v, 4);
                var lo = Avx2.And(v, nibble);
                var x = Avx2.UnpackLow(hi, lo);
                var y = Avx2.UnpackHigh(hi, lo);
                var r0 = Lookup(t0, t1, Avx2.Permute2x128(x, y, 0x20)).AsInt32();
                var r1 = Lookup(t0, t1, Avx2.Permute2x128(x, y, 0x31)).AsInt32();
                // packus interleaves 128-bit lanes (r0a r1a r0b r1b); the permute restores r0a r0b r1a r1b.
                Avx.Store(ob + 2 * j, Avx2.Permute4x64(Avx2.PackUnsignedSaturate(r0, r1).AsInt64(), 0b11_01_10_00).AsUInt16());
            }
        }
    }

    /// <summary>float32 -> bfloat16 bits (round to nearest even, NaN -> 0x7FC0) in the low half of each int.</summary>
    static Vector256<int> Bf16(Vector256<float> f)
    {
        var u = f.AsInt32();
        var r = Avx2.ShiftRightLogical(Avx2.Add(u, Avx2.Add(Vector256.Create(0x7FFF), Avx2.And(Avx2.ShiftRightLogical(u, 16), Vector256.Create(1)))), 16);
        return Vector256.ConditionalSelect(Avx.CompareUnordered(f, f).AsInt32(), Vector256.Create(0x7FC0), r);
    }

    /// <summary>16-entry table lookup: permute within each half, pick the half by bit 3 of the index.</summary>
    static Vector256<float> Lookup(Vector256<float> t0, Vector256<float> t1, Vector256<int> idx) =>
        Avx.BlendVariable(Avx2.PermuteVar8x32(t0, idx), Avx2.PermuteVar8x32(t1, idx), Avx2.ShiftLeftLogical(idx, 28).AsSingle());

}
