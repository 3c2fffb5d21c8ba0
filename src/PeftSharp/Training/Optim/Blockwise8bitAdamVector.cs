using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftSharp.Training.Optim;

/// <summary>
/// One block of the 8-bit AdamW step, eight elements at a time with AVX2: the code values come from AVX-512 VBMI
/// byte permutes where the CPU has them (<see cref="CodeTableLookup"/>, whole blocks), else from gathers into the
/// 256-entry maps; the update is the scalar kernel's float arithmetic in the same order (explicit multiply/add,
/// no fused multiply-add, IEEE sqrt and divide, NaN-propagating max), and requantisation is one gather of the map's
/// rule for the float's top 16 bits and one compare of its low 16 (<see cref="DynamicMap.QuantizeByRule"/>, equal to
/// the map's search for every float). So the result is
/// bit-identical to <see cref="Blockwise8bitAdamKernel.StepScalar"/>, which the tests check; the scalar code
/// finishes a block's tail when its length is not a multiple of eight.
/// </summary>
internal static unsafe class Blockwise8bitAdamVector
{
    public static bool IsSupported => Avx2.IsSupported;

    public static void Block(in Blockwise8bitAdamKernel.BlockStep k, long b, long start, int len, float* m, float* v)
    {
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
