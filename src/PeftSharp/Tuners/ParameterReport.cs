using System.Globalization;
using PeftSharp.Memory;
using PeftSharp.Models;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Tuners;

/// <summary>One module's share of the report.</summary>
internal sealed record ModuleParameters(string Module, long Trainable, long Total);

/// <summary>PEFT's print_trainable_parameters: trainable / all parameters (adapters included) and the percentage.</summary>
internal sealed record ParameterReport(long Trainable, long Total, IReadOnlyList<ModuleParameters> Modules)
{
    public double Percent => Total == 0 ? 0 : 100.0 * Trainable / Total;

    public static ParameterReport For(CausalLM model)
    {
        var adapters = LoraModel.Of(model).Adapters.Values.ToList();
        var rows = new List<ModuleParameters>();
        foreach (var lin in model.Linears())
        {
            long baseCount = lin.InFeatures * lin.OutFeatures + (lin.bias?.numel() ?? 0);
            var own = adapters.SelectMany(a => a.Layers.TryGetValue(lin.ModulePath, out var l) ? l.NamedParameters().Select(p => p.Param) : []).ToList();
            long trainable = own.Where(p => p.requires_grad).Sum(p => p.numel()) + (lin.weight?.requires_grad == true ? lin.weight.numel() : 0);
            rows.Add(new ModuleParameters(lin.ModulePath, trainable, baseCount + own.Sum(p => p.numel())));
        }
        long adapterTotal = adapters.Sum(a => a.ParameterCount);
        long adapterTrainable = adapters.SelectMany(a => a.Parameters()).Where(p => p.requires_grad).Sum(p => p.numel());
        long baseTrainable = model.parameters().Where(p => p.requires_grad).Sum(p => p.numel());
        return new ParameterReport(baseTrainable + adapterTrainable, model.ParameterCount() + adapterTotal, rows);
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"trainable params: {Trainable:N0} || all params: {Total:N0} || trainable%: {Percent:0.0000}");
}

/// <summary>LoRA parameter counts from shapes alone (no tensors): r·(in+out) per module, DoRA adds out.</summary>
internal static class LoraParameterCount
{
    public static long For(ModelShape shape, LoraConfig cfg) => PerModule(shape, cfg).Sum(m => m.Count);

    public static IEnumerable<(string Module, long Count)> PerModule(ModelShape shape, LoraConfig cfg)
    {
        var matcher = cfg.Matcher();
        foreach (var m in shape.Modules.Where(m => m.Kind == ModuleKind.Linear && !m.Tied && matcher.Matches(m)))
            yield return (m.Name, cfg.RankFor(m.Name) * (m.In + m.Out) + (cfg.UseDora ? m.Out : 0));
    }
}
