using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// Gradient checkpointing of decoder layers: forward runs each layer without recording a graph (only its
/// input is kept); backward re-runs the layer with grad on a detached copy of that input and back-propagates
/// through it (reentrant style), so parameter gradients accumulate and the input gradient flows on.
/// Works with any adapter method, dense or quantised base. No KV cache while training.
/// </summary>
internal static class GradientCheckpointing
{
    /// <summary>Requires grad so the checkpoint node exists even when the layer input (frozen embeddings) does not.</summary>
    static readonly Tensor Anchor = zeros(1).requires_grad_(true).DetachFromDisposeScope();

    /// <summary>Also keeps one decoder layer's dequantised weights (<see cref="DequantReuse"/>) on a quantised base:
    /// the recomputed layer's backward then reuses them instead of dequantising a third time per step. The pool is
    /// this model's (on its quantised weights): another model's reuse is untouched.</summary>
    public static void Enable(CausalLM model)
    {
        model.LayerRunner = Run;
        DequantReuse.KeepLayers(model, DequantReuse.DefaultLayers);
    }

    public static void Disable(CausalLM model)
    {
        model.LayerRunner = CausalLM.DefaultLayerRunner;
        DequantReuse.Detach(model);   // frees this model's kept weights
    }

    public static bool IsEnabled(CausalLM model) => model.LayerRunner == (Func<DecoderLayer, Tensor, ForwardContext, Tensor>)Run;

    static Tensor Run(DecoderLayer layer, Tensor x, ForwardContext ctx)
    {
        if (!is_grad_enabled()) return layer.Forward(x, ctx);
        if (ctx.Cache is not null) throw new InvalidOperationException("gradient checkpointing cannot run with a KV cache (training has none)");
        return CheckpointFunction.apply(x, ctx.Cos, ctx.Sin, ctx.Mask!, Anchor, layer, ctx.SlidingMask!, ctx.MaskIsTrailingPadding);
    }

    sealed class CheckpointFunction : autograd.SingleTensorFunction<CheckpointFunction>
    {
        public override string Name => "CheckpointedDecoderLayer";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (x, cos, sin, mask, layer) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], vars[3] as Tensor, (DecoderLayer)vars[5]);
            var sliding = vars[6] as Tensor;   // the sliding-window mask, for windowed layers
            // A right-padded batch's mask lets attention take the causal kernel; the recompute must take it as well.
            bool trailing = (bool)vars[7];
            // Saved variables hold their own references: cos/sin/masks outlive the forward's dispose scope.
            ctx.save_for_backward([x, cos, sin, mask!, random.get_rng_state(), sliding!]);
            ctx.save_data("layer", layer);
            ctx.save_data("trailing", trailing);
            // TorchSharp would build zeros for a missing grad from an output-shaped tensor that our dispose scope frees.
            ctx.set_materialize_grads(false);
            return layer.Forward(x, new ForwardContext { Cos = cos, Sin = sin, Mask = mask, SlidingMask = sliding, MaskIsTrailingPadding = trailing });
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
        {
            if (grad is null || grad.IsInvalid) return [null!, null!, null!, null!, null!, null!, null!, null!];
            var layer = (DecoderLayer)ctx.get_data("layer");
            using var scope = NewDisposeScope();
            var saved = ctx.get_saved_variables();
            var (x, cos, sin, mask, rng, sliding) = (saved[0], saved[1], saved[2], saved[3], saved[4], saved[5]);
            var now = random.get_rng_state();
            random.set_rng_state(rng); // the same dropout masks as the forward
            Tensor input;
            using (enable_grad())
            {
                input = x.detach().requires_grad_(true);
                var y = layer.Forward(input, new ForwardContext { Cos = cos, Sin = sin, Mask = mask, SlidingMask = sliding, MaskIsTrailingPadding = (bool)ctx.get_data("trailing") });
                autograd.backward([y], [grad]);
            }
            random.set_rng_state(now);
            var gx = input.grad;
            return [gx is null ? null! : gx.MoveToOuterDisposeScope(), null!, null!, null!, null!, null!, null!, null!];
        }
    }
}
