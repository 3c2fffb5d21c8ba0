using System.Text.Json.Nodes;
using PeftSharp.Memory;

namespace PeftSharp.Cli.Reports;

/// <summary>PNG plots of a run (ScottPlot): loss curves, and planned vs measured memory by resident.</summary>
public static class RunPlots
{
    public static void Loss(IReadOnlyList<JsonObject> records, string path)
    {
        var plot = new ScottPlot.Plot();
        var train = records.Where(r => r["loss"] is not null).ToList();
        var eval = records.Where(r => r["eval_loss"] is not null).ToList();
        if (train.Count > 0)
        {
            var s = plot.Add.Scatter(train.Select(r => (double)r["step"]!.GetValue<int>()).ToArray(), train.Select(r => r["loss"]!.GetValue<double>()).ToArray());
            s.LegendText = "train loss";
            s.MarkerSize = 0;
        }
        if (eval.Count > 0)
        {
            var s = plot.Add.Scatter(eval.Select(r => (double)r["step"]!.GetValue<int>()).ToArray(), eval.Select(r => r["eval_loss"]!.GetValue<double>()).ToArray());
            s.LegendText = "eval loss";
            s.MarkerSize = 6;
        }
        plot.Title("Loss");
        plot.XLabel("optimiser step");
        plot.YLabel("cross entropy (nats/token)");
        plot.ShowLegend();
        plot.SavePng(path, 800, 500);
    }

    /// <summary>Preference runs: reward accuracy (left axis) and reward margin (right axis), per step and per evaluation.</summary>
    public static void Rewards(IReadOnlyList<JsonObject> records, string path)
    {
        var plot = new ScottPlot.Plot();
        void Series(string key, string label, bool right, float marker)
        {
            var rs = records.Where(r => r[key] is not null).ToList();
            if (rs.Count == 0) return;
            var s = plot.Add.Scatter(rs.Select(r => (double)r["step"]!.GetValue<int>()).ToArray(), rs.Select(r => r[key]!.GetValue<double>()).ToArray());
            s.LegendText = label;
            s.MarkerSize = marker;
            if (right) s.Axes.YAxis = plot.Axes.Right;
        }
        Series("rewards/accuracies", "train reward accuracy", false, 0);
        Series("eval_rewards/accuracies", "eval reward accuracy", false, 6);
        Series("rewards/margins", "train reward margin", true, 0);
        Series("eval_rewards/margins", "eval reward margin", true, 6);
        plot.Title("Implicit reward: accuracy and margin (chosen - rejected)");
        plot.XLabel("optimiser step");
        plot.Axes.Left.Label.Text = "reward accuracy";
        plot.Axes.Right.Label.Text = "reward margin";
        plot.ShowLegend();
        plot.SavePng(path, 800, 500);
    }

    public static void Memory(MemoryPlan plan, MeasuredMemory measured, string path)
    {
        string[] names = ["weights", "gradients", "optimizer", "activations+buffers+growth", "runtime after load", "total"];
        double Mb(long b) => b / 1e6;
        double[] planned =
        [
            Mb(plan.WeightsBytes), Mb(plan.GradientsBytes), Mb(plan.OptimizerBytes),
            Mb(plan.ActivationsBytes + plan.LogitsBytes + plan.DequantBufferBytes + plan.RuntimeGrowthBytes), Mb(plan.RuntimeAfterLoadBytes), Mb(plan.TotalBytes),
        ];
        double[] real =
        [
            Mb(measured.Weights), Mb(measured.Gradients), Mb(measured.Optimizer), Mb(measured.ActivationsAndBuffers), Mb(measured.Runtime), Mb(measured.Peak),
        ];
        var plot = new ScottPlot.Plot();
        var bars = new List<ScottPlot.Bar>();
        for (int i = 0; i < names.Length; i++)
        {
            bars.Add(new ScottPlot.Bar { Position = i * 3, Value = planned[i], FillColor = ScottPlot.Colors.SteelBlue });
            bars.Add(new ScottPlot.Bar { Position = i * 3 + 1, Value = real[i], FillColor = ScottPlot.Colors.Orange });
        }
        plot.Add.Bars(bars);
        plot.Axes.Bottom.SetTicks(names.Select((_, i) => i * 3 + 0.5).ToArray(), names);
        plot.Legend.ManualItems.Add(new ScottPlot.LegendItem { LabelText = "planned", FillColor = ScottPlot.Colors.SteelBlue });
        plot.Legend.ManualItems.Add(new ScottPlot.LegendItem { LabelText = "measured", FillColor = ScottPlot.Colors.Orange });
        plot.ShowLegend();
        plot.Title("Memory by resident: planned vs measured");
        plot.YLabel("MB (10^6 bytes)");
        plot.Axes.Margins(bottom: 0);
        plot.SavePng(path, 900, 500);
    }
}
