using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftSharp.Training.Optim;

/// <summary>
/// One block of the 8-bit AdamW step, vectorised, bit-identical to <see cref="Blockwise8bitAdamKernel.StepScalar"/>
/// (the tests check). Two block kernels:
/// <list type="bullet">
/// <item>AVX-512 (<see cref="Block512"/>, whole blocks, where the CPU has AVX-512 with VBMI): code values by byte
/// permutes (<see cref="CodeTableLookup"/>), the update 16 lanes at a time, requantisation by the maps' decade lines
/// (<see cref="DecadeQuantizer"/>: arithmetic in registers, no table in memory). On the Zen 4 VM it made the `optim`
/// bench's 8-bit step ~1.3x faster than the AVX2 blocks in the same run.</item>
/// <item>AVX2, eight elements at a time: code values from the byte permutes where VBMI exists, else gathers into the
/// 256-entry maps; requantisation is one gather of the map's rule for the float's top 16 bits and one compare of its
/// low 16 (<see cref="DynamicMap.QuantizeByRule"/>, equal to the map's search for every float). The scalar code
/// finishes a block's tail when its length is not a multiple of eight.</item>
/// </list>
/// Both run the scalar kernel's float arithmetic in its order: explicit multiply/add (no fused multiply-add), IEEE sqrt
/// and divide, the maxima as MathF.Max takes them (NaN propagates).
/// </summary>
internal static unsafe class Blockwise8bitAdamVector
{
    public static bool IsSupported => Avx2.IsSupported;

    /// <summary>Whole blocks run <see cref="Block512"/> where the CPU has AVX-512 (VBMI for the lookups) and both maps have their decade quantisers.</summary>
    static bool Wide => CodeTableLookup.IsSupported && DecadeQuantizer.IsSupported && SignedDecades is not null && UnsignedDecades is not null;

    static readonly DecadeQuantizer? SignedDecades = DecadeQuantizer.IsSupported ? DecadeQuantizer.For(DynamicMap.Signed, signed: true) : null;
    static readonly DecadeQuantizer? UnsignedDecades = DecadeQuantizer.IsSupported ? DecadeQuantizer.For(DynamicMap.Unsigned, signed: false) : null;

    /// <summary>Whole blocks go through <see cref="Block512"/> now.</summary>
    internal static bool RunsWide => Wide && UseWide;

    /// <summary>The blocks this CPU runs, for the benches' output.</summary>
    internal static string Description =>
        RunsWide ? "AVX-512 blocks (byte-permute lookups, decade-line requantisation)"
        : IsSupported ? $"AVX2 blocks ({(CodeTableLookup.IsSupported ? "byte-permute lookups" : "gathered lookups")}, gathered requantisation rules)"
        : "scalar (no AVX2)";

    /// <summary>Switch for benches and tests: false runs the AVX2 block (gathered rules) on an AVX-512 CPU too.</summary>
    internal static bool UseWide { get; set; } = true;

    public static void Block(in Blockwise8bitAdamKernel.BlockStep k, long b, long start, int len, float* m, float* v)
    {
        if (len == Blockwise8bitAdamKernel.BlockSize && RunsWide) { Block512(in k, b, start, m, v); return; }
        var sMap = DynamicMap.Signed;
        var uMap = DynamicMap.Unsigned;
        fixed (float* sv = sMap.Values, uv = uMap.Values)
        fixed (byte* sPlanes = sMap.ValuePlanes, uPlanes = uMap.ValuePlanes)
        {
            // Whole blocks where AVX-512 VBMI exists: both moments' code values looked up up front without gathers
            // (CodeTableLookup), into the buffers the new moments then overwrite.
            bool looked = len == Blockwise8bitAdamKernel.BlockSize && CodeTableLookup.IsSupported;
            if (looked)
            {
                CodeTableLookup.Lookup(sPlanes, k.MCodes + start, m, len);
                CodeTableLookup.Lookup(uPlanes, k.VCodes + start, v, len);
            }
            float scaleM = k.MAbsmax[b] * k.Beta1, scaleV = k.VAbsmax[b] * k.Beta2;
            var scaleMv = Vector256.Create(scaleM);
            var scaleVv = Vector256.Create(scaleV);
            var gm = Vector256.Create(k.Gm);
            var gv = Vector256.Create(k.Gv);
            var decay = Vector256.Create(k.Decay);
            var stepSize = Vector256.Create(k.StepSize);
            var invBc2Sqrt = Vector256.Create(k.InvBc2Sqrt);
            var eps = Vector256.Create(k.Eps);
            var maxMv = Vector256<float>.Zero;
            var maxVv = Vector256<float>.Zero;
            int j = 0;
            for (; j + 8 <= len; j += 8)
            {
                long i = start + j;
                var gi = Avx.LoadVector256(k.G + i);
                var sm = looked ? Avx.LoadVector256(m + j) : Avx2.GatherVector256(sv, Avx2.ConvertToVector256Int32(k.MCodes + i), 4);
                var su = looked ? Avx.LoadVector256(v + j) : Avx2.GatherVector256(uv, Avx2.ConvertToVector256Int32(k.VCodes + i), 4);
                var mj = Avx.Add(Avx.Multiply(sm, scaleMv), Avx.Multiply(gm, gi));
                var vj = Avx.Add(Avx.Multiply(su, scaleVv), Avx.Multiply(Avx.Multiply(gv, gi), gi));
                Avx.Store(m + j, mj);
                Avx.Store(v + j, vj);
                maxMv = Vector256.Max(maxMv, Vector256.Abs(mj));
                maxVv = Vector256.Max(maxVv, vj);
                var denom = Avx.Add(Avx.Multiply(Avx.Sqrt(vj), invBc2Sqrt), eps);
                var p = Avx.Subtract(Avx.Multiply(Avx.LoadVector256(k.P + i), decay), Avx.Divide(Avx.Multiply(stepSize, mj), denom));
                Avx.Store(k.P + i, p);
            }
            float maxM = 0, maxV = 0;
            for (int l = 0; l < 8; l++)
            {
                maxM = MathF.Max(maxM, maxMv.GetElement(l));
                maxV = MathF.Max(maxV, maxVv.GetElement(l));
            }
            // The block's scales are still the old ones here: they are written below.
            Blockwise8bitAdamKernel.UpdateElements(in k, b, start, j, len, m, v, ref maxM, ref maxV);
            k.MAbsmax[b] = maxM; k.VAbsmax[b] = maxV;
            // An all-zero block (e.g. LoRA A while B is still zero) keeps scale 0 and codes for 0.
            float invM = maxM > 0 ? 1 / maxM : 0, invV = maxV > 0 ? 1 / maxV : 0;
            Quantize(sMap, m, invM, k.MCodes + start, len);
            Quantize(uMap, v, invV, k.VCodes + start, len);
        }
    }

    /// <summary>
    /// A whole block with AVX-512: the code values by byte permutes, the update 16 lanes at a time (the scalar
    /// arithmetic in its order), the maxima with the plain vmaxps (NaN is looked for separately: where a moment is NaN the
    /// maxima are taken again over the block in the scalar kernel's order, so a NaN propagates as MathF.Max does), and
    /// requantisation by the maps' decade lines (<see cref="DecadeQuantizer"/>), without gathers.
    /// </summary>
    static void Block512(in Blockwise8bitAdamKernel.BlockStep k, long b, long start, float* m, float* v)
    {
        const int len = Blockwise8bitAdamKernel.BlockSize;
        fixed (byte* sPlanes = DynamicMap.Signed.ValuePlanes, uPlanes = DynamicMap.Unsigned.ValuePlanes)
        {
            CodeTableLookup.Lookup(sPlanes, k.MCodes + start, m, len);
            CodeTableLookup.Lookup(uPlanes, k.VCodes + start, v, len);
        }
        var scaleM = Vector512.Create(k.MAbsmax[b] * k.Beta1);
        var scaleV = Vector512.Create(k.VAbsmax[b] * k.Beta2);
        var gm = Vector512.Create(k.Gm);
        var gv = Vector512.Create(k.Gv);
        var decay = Vector512.Create(k.Decay);
        var stepSize = Vector512.Create(k.StepSize);
        var invBc2Sqrt = Vector512.Create(k.InvBc2Sqrt);
        var eps = Vector512.Create(k.Eps);
        var maxMv = Vector512<float>.Zero;
        var maxVv = Vector512<float>.Zero;
        var nan = Vector512<float>.Zero;
        float* g = k.G + start, p = k.P + start;
        for (int j = 0; j < len; j += 16)
        {
            var gi = Vector512.Load(g + j);
            var mj = Avx512F.Add(Avx512F.Multiply(Vector512.Load(m + j), scaleM), Avx512F.Multiply(gm, gi));
            var vj = Avx512F.Add(Avx512F.Multiply(Vector512.Load(v + j), scaleV), Avx512F.Multiply(Avx512F.Multiply(gv, gi), gi));
            Vector512.Store(mj, m + j);
            Vector512.Store(vj, v + j);
            maxMv = Avx512F.Max(maxMv, Vector512.Abs(mj));
            maxVv = Avx512F.Max(maxVv, vj);
            nan |= Avx512F.CompareUnordered(mj, vj);
            var denom = Avx512F.Add(Avx512F.Multiply(Avx512F.Sqrt(vj), invBc2Sqrt), eps);
            Vector512.Store(Avx512F.Subtract(Avx512F.Multiply(Vector512.Load(p + j), decay), Avx512F.Divide(Avx512F.Multiply(stepSize, mj), denom)), p + j);
        }
        float maxM = 0, maxV = 0;
        if (nan.ExtractMostSignificantBits() == 0)
        {
            // No NaN (and no -0: |m| and v are never negative zero): the maximum is the same in any order.
            maxM = MaxOf(Vector256.Max(maxMv.GetLower(), maxMv.GetUpper()));
            maxV = MaxOf(Vector256.Max(maxVv.GetLower(), maxVv.GetUpper()));
        }
        else
            for (int j = 0; j < len; j++)
            {
                maxM = MathF.Max(maxM, MathF.Abs(m[j]));
                maxV = MathF.Max(maxV, v[j]);
            }
        k.MAbsmax[b] = maxM; k.VAbsmax[b] = maxV;
        float invM = maxM > 0 ? 1 / maxM : 0, invV = maxV > 0 ? 1 / maxV : 0;
        SignedDecades!.Quantize(m, invM, k.MCodes + start, len);
        UnsignedDecades!.Quantize(v, invV, k.VCodes + start, len);
    }

    static float MaxOf(Vector256<float> x)
    {
        var h = Vector128.Max(x.GetLower(), x.GetUpper());
        h = Vector128.Max(h, Sse.Shuffle(h, h, 0b_01_00_11_10));
        h = Vector128.Max(h, Sse.Shuffle(h, h, 0b_10_11_00_01));
        return h.ToScalar();
    }

    /// <summary>codes[j] = map.Quantize(x[j] * inv), eight lanes at a time, by the map's bucket rules.</summary>
    static void Quantize(DynamicMap map, float* x, float inv, byte* codes, int len)
    {
        fixed (uint* rules = map.BucketRuleTable)
        {
            var invV = Vector256.Create(inv);
            var low16 = Vector256.Create(0xFFFF);
            var lowByte = Vector256.Create(0xFF);
            int j = 0;
            for (; j + 8 <= len; j += 8)
            {
                var bits = Avx.Multiply(Avx.LoadVector256(x + j), invV).AsInt32();
                var rule = Avx2.GatherVector256((int*)rules, Avx2.ShiftRightLogical(bits, 16), 4);
                // The key orders a bucket's floats by value: low 16 bits, flipped for negative floats.
                var key = Avx2.Xor(Avx2.And(bits, low16), Avx2.ShiftRightLogical(Avx2.ShiftRightArithmetic(bits, 31), 16));
                var up = Avx2.CompareGreaterThan(key, Avx2.ShiftRightLogical(rule, 8)); // both < 2^16: signed compare is fine
                var code = Avx2.Subtract(Avx2.And(rule, lowByte), up); // true lanes are -1
                var shorts = Vector128.Narrow(code.GetLower(), code.GetUpper());
                var bytes = Vector128.Narrow(shorts, shorts);
                *(ulong*)(codes + j) = bytes.AsUInt64().ToScalar();
            }
            for (; j < len; j++) codes[j] = map.Quantize(x[j] * inv);
        }
    }
}
