using TorchSharp;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>PEFT's init_lora_weights choices (LoraLayer.reset_lora_parameters / pissa_init).</summary>
static class LoraWeightsInit
{
    /// <summary>kaiming_uniform_(a=sqrt 5) on [rows, fanIn] reduces to U(-1/sqrt(fanIn), 1/sqrt(fanIn)).</summary>
    public static Tensor KaimingUniform(long rows, long fanIn, Generator g, ScalarType dtype)
    {
        double bound = 1.0 / Math.Sqrt(fanIn);
        using var scope = NewDisposeScope();   // the chain's wrappers freed here, not by finalizers
        var u = rand(new[] { rows, fanIn }, ScalarType.Float32, generator: g);
        using var width = (2 * bound).ToScalar();   // held across the calls: see ScalarArgs
        using var shift = bound.ToScalar();
        return u.mul(width).sub_(shift).to_type(dtype).MoveToOuterDisposeScope();
    }

    /// <summary>A and B for one module; PiSSA also rewrites the frozen base to the residual W - s·B·A.</summary>
    public static (Tensor A, Tensor B) Create(LoraConfig cfg, TunableLinear layer, int r, double scaling, Generator g, ScalarType dtype, Device device)
    {
        long fin = layer.InFeatures, fout = layer.OutFeatures;
        using var scope = NewDisposeScope();
        var (a, b) = Init();
        return (a.MoveToOuterDisposeScope(), b.MoveToOuterDisposeScope());

        (Tensor A, Tensor B) Init()
        {
            switch (cfg.InitLoraWeights)
            {
                case PeftSharp.LoraInit.True:
                    return (KaimingUniform(r, fin, g, dtype).to(device), zeros(new[] { fout, (long)r }, dtype, device));
                case PeftSharp.LoraInit.False: // PEFT leaves nn.Linear's default init on both: a non-identity adapter, for tests
                    return (KaimingUniform(r, fin, g, dtype).to(device), KaimingUniform(fout, r, g, dtype).to(device));
                case PeftSharp.LoraInit.Gaussian:
                    var n = randn(new[] { (long)r, fin }, ScalarType.Float32, generator: g);
                    return (n.Times(1.0 / r).to_type(dtype).to(device), zeros(new[] { fout, (long)r }, dtype, device));
                case PeftSharp.LoraInit.Pissa:
                    return Pissa(layer, r, scaling, dtype);
                default:
                    throw new InvalidDataException($"'init_lora_weights' {cfg.InitLoraWeights} is not supported");
            }
        }
    }

    /// <summary>Principal singular vectors of W become A and B; the residual stays as the frozen base.</summary>
    static (Tensor A, Tensor B) Pissa(TunableLinear layer, int r, double scaling, ScalarType dtype)
    {
        if (layer.Quantized is not null || layer.weight is null)
            throw new InvalidOperationException($"{layer.ModulePath}: PiSSA needs a dense base weight (load the model unquantised)");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var w = layer.weight.to_type(ScalarType.Float32);
        var (u, s, vh) = linalg.svd(w, fullMatrices: false);
        var sr = s.narrow(0, 0, r).DividedBy(scaling);
        var sqrtS = diag(sr.sqrt());
        var a = sqrtS.matmul(vh.narrow(0, 0, r));
        var b = u.narrow(1, 0, r).matmul(sqrtS);
        layer.DropPacked();
        layer.weight.copy_((w - b.matmul(a).Times(scaling)).to_type(layer.weight.dtype));
        return (a.to_type(dtype).MoveToOuterDisposeScope(), b.to_type(dtype).MoveToOuterDisposeScope());
    }
}
