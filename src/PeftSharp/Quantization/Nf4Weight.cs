using System.Runtime.InteropServices;
using PeftSharp.IO;
using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// A frozen Linear weight in bitsandbytes 4-bit form: packed codes (two per byte, high nibble first),
/// per-block absmax (float32, or 8-bit with nested scales and an offset under double quantisation) and the
/// 16-entry code table. Tensors live on one device; on CPU dequantisation runs the SIMD kernel, elsewhere the
/// TorchSharp-ops path (both produce identical bits).
/// </summary>
internal sealed class Nf4Weight : IQuantizedWeight
{
    public long[] Shape { get; }
    public Nf4Options Options { get; }
    public string Scheme => Options.Scheme;
    /// <summary>The dtype recorded in the quant state ("float16", "bfloat16", "float32"): the weight's original dtype.</summary>
    public string DtypeName { get; }
    /// <summary>u8 [numel / 2].</summary>
    public Tensor Packed { get; }
    /// <summary>f32 [blocks], or u8 [blocks] under double quantisation.</summary>
    public Tensor Absmax { get; }
    /// <summary>f32 [16].</summary>
    public Tensor Code { get; }
    public Tensor? NestedAbsmax { get; }
    public Tensor? NestedCode { get; }
    public float Offset { get; }
    public int NestedBlockSize { get; }

    /// <summary>The owning model's reuse pool (<see cref="DequantReuse"/>), or null.</summary>
    public DequantReuse? Reuse { get; set; }

    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
    public long Blocks => ElementCount / Options.BlockSize;

    /// <summary>Codes + absmax + nested absmax + offset; the code tables are format constants, not counted.</summary>
    public long StorageBytes => Packed.numel() + Absmax.numel() * Absmax.ElementSize + (NestedAbsmax?.numel() * 4 ?? 0) + (Options.DoubleQuant ? 4 : 0);
    public double BitsPerWeight => StorageBytes * 8.0 / ElementCount;

    public Nf4Weight(long[] shape, Nf4Options options, string dtypeName, Tensor packed, Tensor absmax, Tensor code,
        Tensor? nestedAbsmax = null, Tensor? nestedCode = null, float offset = 0, int nestedBlockSize = DoubleQuant.NestedBlockSize)
    {
        Shape = shape; Options = options; DtypeName = dtypeName;
        Packed = packed; Absmax = absmax; Code = code;
        NestedAbsmax = nestedAbsmax; NestedCode = nestedCode; Offset = offset; NestedBlockSize = nestedBlockSize;
        foreach (var t in Tensors()) t.DetachFromDisposeScope();
    }

    IEnumerable<Tensor> Tensors()
    {
        yield return Packed; yield return Absmax; yield return Code;
        if (NestedAbsmax is not null) yield return NestedAbsmax;
        if (NestedCode is not null) yield return NestedCode;
    }

    /// <summary>Quantises a dense [out, in] weight (any float dtype). Also the requantise step after a merge.</summary>
    public static Nf4Weight FromDense(Tensor dense, Nf4Options? options = null, Device? device = null, string name = "weight")
    {
        options ??= new Nf4Options();
        options.Validate();
        using var scope = NewDisposeScope();
        var f = dense.detach().to(CPU).to_type(ScalarType.Float32).contiguous();
        if (f.numel() % options.BlockSize != 0)
            throw new ArgumentException($"{name}: {f.numel()} elements [{string.Join(", ", dense.shape)}] are not a multiple of the block size {options.BlockSize}");
        var (packed, absmax) = Nf4Quantizer.QuantizeReference(MemoryMarshal.Cast<byte, float>(f.bytes), options.BlockSize, options.Type, name);
        string dtypeName = SafeTensorDtype.TorchName(dense.dtype);
        var dev = device ?? dense.device;
        Tensor Put(Tensor t) => dev.type == DeviceType.CPU ? t : t.to(dev);
        var code = Put(tensor(Nf4Codes.Table(options.Type)));
        var packedT = Put(tensor(packed));
        if (!options.DoubleQuant)
            return new Nf4Weight(dense.shape, options, dtypeName, packedT, Put(tensor(absmax)), code);
        var dq = DoubleQuant.Quantize(absmax);
        return new Nf4Weight(dense.shape, options, dtypeName, packedT, Put(tensor(dq.Codes)), code,
            Put(tensor(dq.NestedAbsmax)), Put(tensor(DoubleQuant.SignedDynamicMap)), dq.Offset, dq.NestedBlockSize);
    }

    /// <summary>
    /// Requantises a merged dense weight (QLoRA merge -> 4-bit again) and reports the relative Frobenius error it
    /// introduces against that dense weight; generations may change, so callers should warn with this number.
    /// </summary>
    public static (Nf4Weight Weight, double RelativeError) Requantize(Tensor merged, Nf4Options options, string name = "weight")
    {
        var w = FromDense(merged, options, merged.device, name);
        var (e, n) = w.ErrorSums(merged);
        return (w, n > 0 ? Math.Sqrt(e / n) : 0);
    }

    public Device Device => Packed.device;

    /// <summary>The per-block absmax as float32 on CPU (double quantisation resolved).</summary>
    public float[] AbsmaxFloats()
    {
        var r = new float[Absmax.numel()];
        AbsmaxInto(r);
        return r;
    }

    /// <summary>Writes the per-block absmax (double quantisation resolved) into <paramref name="dst"/>.</summary>
    void AbsmaxInto(Span<float> dst)
    {
        using var a = Absmax.cpu();
        if (!Options.DoubleQuant) { MemoryMarshal.Cast<byte, float>(a.bytes).CopyTo(dst); return; }
        using var na = NestedAbsmax!.cpu();
        using var nc = NestedCode!.cpu();
        DoubleQuant.Dequantize(a.bytes, MemoryMarshal.Cast<byte, float>(na.bytes), MemoryMarshal.Cast<byte, float>(nc.bytes), Offset, NestedBlockSize, dst);
    }

    public Tensor Dequantize(ScalarType dtype, Device device)
    {
        var d = Device.type == DeviceType.CPU && Nf4Kernel.Supports(dtype) ? DequantizeKernel(dtype) : DequantizeOps(dtype);
        if (device.type == d.device.type && device.index == d.device.index) return d;
        using (d) return d.to(device);
    }

    /// <summary>The SIMD CPU kernel, writing straight into a fresh tensor's buffer.</summary>
    public Tensor DequantizeKernel(ScalarType dtype)
    {
        var result = empty(Shape, dtype);
        DequantizeKernelInto(result);
        return result;
    }

    /// <summary>CPU weights and a kernel dtype: the SIMD kernel writes into <paramref name="destination"/> (contiguous, [out, in]).</summary>
    public bool DequantizeInto(Tensor destination)
    {
        if (Device.type != DeviceType.CPU || destination.device.type != DeviceType.CPU || !Nf4Kernel.Supports(destination.dtype)) return false;
        if (!destination.is_contiguous() || !destination.shape.SequenceEqual(Shape))
            throw new ArgumentException($"dequantise into [{string.Join(", ", destination.shape)}]: needs a contiguous [{string.Join(", ", Shape)}]");
        DequantizeKernelInto(destination);
        return true;
    }

    void DequantizeKernelInto(Tensor result)
    {
        using var rows = KernelRows();
        rows.Write(0, result, Nf4Kernel.ThreadsFor(ElementCount));
    }

    /// <summary>
    /// The SIMD kernel's view of this weight for one pass: the absmax decoded once (double quantisation resolved), so
    /// the pass can write the dense weight whole or a tile of rows at a time.
    /// </summary>
    public KernelRowWriter KernelRows()
    {
        if (Device.type != DeviceType.CPU) throw new InvalidOperationException("the SIMD kernel runs on CPU tensors only");
        return new KernelRowWriter(this);
    }

    /// <summary>Writes rows of the dense weight with the SIMD kernel; dispose it to return the decoded absmax to the pool.</summary>
    internal sealed class KernelRowWriter : IDisposable
    {
        readonly Nf4Weight _w;
        readonly float[] _code = new float[16];
        // Pooled: a fresh float[] per call lands on the large-object heap (over 85 KB for 1.4M+ weights), which only
        // gen-2 collections free, so a training run's resident set grew with every dequantisation.
        float[]? _absmax;
        readonly int _blocks;

        internal KernelRowWriter(Nf4Weight w)
        {
            _w = w;
            _blocks = (int)w.Absmax.numel();
            _absmax = System.Buffers.ArrayPool<float>.Shared.Rent(_blocks);
            w.AbsmaxInto(_absmax);
            using var code = w.Code.to_type(ScalarType.Float32);
            MemoryMarshal.Cast<byte, float>(code.bytes).CopyTo(_code);
        }

        /// <summary>
        /// Rows [<paramref name="firstRow"/>, firstRow + rows of <paramref name="dst"/>) into <paramref name="dst"/>
        /// (contiguous, [rows, in] of a kernel dtype); the tile must start and end on a quantisation block.
        /// </summary>
        public void Write(long firstRow, Tensor dst, int threads)
        {
            long cols = _w.Shape[^1], first = firstRow * cols, bs = _w.Options.BlockSize;
            if (!dst.is_contiguous() || dst.shape[^1] != cols || first % bs != 0 || dst.numel() % bs != 0)
                throw new ArgumentException($"dequantise rows from {firstRow} into [{string.Join(", ", dst.shape)}]: needs a contiguous tile of whole {bs}-value blocks of [{string.Join(", ", _w.Shape)}]");
            Nf4Kernel.DequantizeBlocks(_w.Packed.bytes, _absmax.AsSpan(0, _blocks), _w.Options.BlockSize, _code, first / bs, dst.bytes, dst.dtype, threads);
        }

        /// <summary>The tile of rows from <paramref name="firstRow"/> into MKL's packed layout (<see cref="Nf4PanelTile"/>, whose shape gives the rows).</summary>
        public unsafe void Write(long firstRow, Nf4PanelTile tile)
        {
            fixed (byte* packed = _w.Packed.bytes)
            fixed (float* absmax = _absmax)
            fixed (float* code = _code)
                tile.Write(packed, absmax, code, _w.Options.BlockSize, _w.Shape[^1], firstRow);
        }

        public void Dispose()
        {
            if (_absmax is null) return;
            System.Buffers.ArrayPool<float>.Shared.Return(_absmax);
            _absmax = null;
        }
    }

    /// <summary>The TorchSharp-ops path (any device): code[nibble] * absmax[block], then cast.</summary>
    public Tensor DequantizeOps(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        Tensor absmax = Absmax;
        if (Options.DoubleQuant)
        {
            var nested = NestedAbsmax!.repeat_interleave(NestedBlockSize).narrow(0, 0, Blocks);
            absmax = (NestedCode!.index_select(0, Absmax.to_type(ScalarType.Int64)) * nested).Plus(Offset);
        }
        var hi = Packed.bitwise_right_shift(4);
        var lo = Packed.bitwise_and(15);
        var idx = stack(new[] { hi, lo }, 1).view(-1).to_type(ScalarType.Int64);
        var vals = Code.to_type(ScalarType.Float32).index_select(0, idx).view(Blocks, Options.BlockSize) * absmax.unsqueeze(1);
        return vals.view(Shape).to_type(dtype).MoveToOuterDisposeScope();
    }

    public Tensor Linear(Tensor x, ScalarType dtype) => QuantizedLinearFunction.Apply(x, this, dtype);

    /// <summary>||dequant(W) - W||_F / ||W||_F in float64: the error a (re)quantisation introduces.</summary>
    public double RelativeError(Tensor dense)
    {
        using var scope = NewDisposeScope();
        var w = dense.to(CPU).to_type(ScalarType.Float64);
        var dq = Dequantize(ScalarType.Float32, CPU).to_type(ScalarType.Float64);
        return (dq - w).norm().item<double>() / w.norm().item<double>();
    }

    /// <summary>(sum (dequant - W)^2, sum W^2) in double, streamed over the codes: no dense copy of the dequantised weight.</summary>
    public (double ErrSq, double NormSq) ErrorSums(Tensor dense)
    {
        using var scope = NewDisposeScope();
        var f = dense.detach().to(CPU).to_type(ScalarType.Float32).contiguous();
        var x = MemoryMarshal.Cast<byte, float>(f.bytes);
        var absmax = AbsmaxFloats();
        var code = Code.cpu().to_type(ScalarType.Float32);
        var c = MemoryMarshal.Cast<byte, float>(code.bytes).ToArray();
        var p = Packed.cpu();
        var packed = p.bytes;
        double e = 0, nrm = 0;
        int bs = Options.BlockSize;
        for (int i = 0; i < x.Length; i++)
        {
            int q = (i & 1) == 0 ? packed[i >> 1] >> 4 : packed[i >> 1] & 15;
            double d = c[q] * absmax[i / bs] - (double)x[i];
            e += d * d;
            nrm += (double)x[i] * x[i];
        }
        return (e, nrm);
    }

    public void Dispose()
    {
        foreach (var t in Tensors()) t.Dispose();
    }
}
