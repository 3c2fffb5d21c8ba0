using System.Text.Json;
using PeftSharp.Memory;
using Spectre.Console;

namespace PeftSharp.Cli.Commands;

/// <summary>Renders memory plans as Spectre tables or JSON. GB here means 10^9 bytes.</summary>
static class PlanOutput
{
    public static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true };

    static string Gb(long bytes) => $"{bytes / 1e9:0.00}";

    static string Count(long n) => n switch
    {
        >= 1_000_000_000 => $"{n / 1e9:0.##}B",
        >= 1_000_000 => $"{n / 1e6:0.##}M",
        >= 1_000 => $"{n / 1e3:0.##}K",
        _ => n.ToString(),
    };

    public static object Json(MemoryPlan p) => new
    {
        model = p.Model,
        method = PlanNames.Name(p.Request.Method),
        total_params = p.TotalParameters,
        trainable_params = p.TrainableParameters,
        trainable_percent = p.TrainablePercent,
        weights_bytes = p.WeightsBytes,
        gradients_bytes = p.GradientsBytes,
        optimizer_bytes = p.OptimizerBytes,
        master_weights_bytes = p.MasterWeightsBytes,
        activations_bytes = p.ActivationsBytes,
        other_bytes = p.OtherBytes,
        logits_bytes = p.LogitsBytes,
        dequant_buffer_bytes = p.DequantBufferBytes,
        gathered_layer_bytes = p.GatheredLayerBytes,
        framework_overhead_bytes = p.FrameworkOverheadBytes,
        total_bytes = p.TotalBytes,
        host_bytes = p.HostBytes,
        pageable_bytes = p.PageableBytes,
        gpus = p.Request.Gpus,
        inference_overhead = p.InferenceOverhead,
        fits = Gpus.Common.ToDictionary(g => g.Name, g => p.Fits(g.Bytes)),
    };

    public static void Write(MemoryPlan p)
    {
        var r = p.Request;
        AnsiConsole.MarkupLineInterpolated(
            $"[bold]{p.Model}[/] {PlanNames.Name(r.Method)}: batch {r.BatchSize} x seq {r.SequenceLength}, {Dtypes.Name(r.WeightDtype)} weights, {PlanNames.Name(r.Optimizer)}, per GPU of {r.Gpus} (GB = 10^9 bytes)");
        var table = new Table().AddColumn("Resident").AddColumn(new TableColumn("GB").RightAligned()).AddColumn(new TableColumn("Share").RightAligned());
        void Row(string name, long bytes) => table.AddRow(Markup.Escape(name), Gb(bytes), $"{100.0 * bytes / p.TotalBytes:0.0}%");
        Row("weights", p.WeightsBytes);
        Row("gradients", p.GradientsBytes);
        Row(p.MasterWeightsBytes > 0 ? "optimizer state (incl. fp32 master)" : "optimizer state", p.OptimizerBytes);
        Row("activations", p.ActivationsBytes);
        Row("other: logits + loss buffers", p.LogitsBytes);
        if (p.DequantBufferBytes > 0) Row("other: dequantised layer", p.DequantBufferBytes);
        if (p.GatheredLayerBytes > 0) Row("other: all-gathered layer", p.GatheredLayerBytes);
        Row("other: framework overhead", p.FrameworkOverheadBytes);
        table.AddRow("[bold]total[/]", $"[bold]{Gb(p.TotalBytes)}[/]", "100%");
        AnsiConsole.Write(table);
        AnsiConsole.WriteLine($"trainable {p.TrainableParameters:N0} of {p.TotalParameters:N0} parameters ({p.TrainablePercent:0.####}%)");
        if (p.HostBytes > 0) AnsiConsole.WriteLine($"CPU (offloaded, all GPUs): {Gb(p.HostBytes)} GB");
        if (p.PageableBytes > 0) AnsiConsole.WriteLine($"pageable optimiser state (evicted to host under pressure): {Gb(p.PageableBytes)} GB");
        var fits = new Table().AddColumn("GPU").AddColumn("Fits").AddColumn(new TableColumn("Headroom GB").RightAligned());
        foreach (var g in Gpus.Common)
            fits.AddRow(Markup.Escape(g.Name), p.Fits(g.Bytes) ? "[green]yes[/]" : "[red]no[/]", Gb(p.Headroom(g.Bytes)));
        AnsiConsole.Write(fits);
    }

    public static void WriteComparison(ModelShape model, IReadOnlyList<MemoryPlan> plans)
    {
        var r = plans[0].Request;
        AnsiConsole.MarkupLineInterpolated(
            $"[bold]{model.Name}[/] ({model.TotalParameters:N0} params): batch {r.BatchSize} x seq {r.SequenceLength}, per GPU of {r.Gpus} (GB = 10^9 bytes)");
        var table = new Table().AddColumn("Method").AddColumn(new TableColumn("Trainable").RightAligned())
            .AddColumn(new TableColumn("%").RightAligned()).AddColumn(new TableColumn("GB").RightAligned())
            .AddColumn("Inference overhead");
        foreach (var p in plans)
            table.AddRow(PlanNames.Name(p.Request.Method), Count(p.TrainableParameters), $"{p.TrainablePercent:0.###}",
                Gb(p.TotalBytes), Markup.Escape(p.InferenceOverhead));
        AnsiConsole.Write(table);
    }
}
