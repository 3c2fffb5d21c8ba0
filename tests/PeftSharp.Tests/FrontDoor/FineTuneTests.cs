using Microsoft.Extensions.Logging;
using PeftSharp.Tests.Training;
using PeftSharp.Training;
using PeftSharp.Training.Methods;
using static TorchSharp.torch;

namespace PeftSharp.Tests.FrontDoor;

/// <summary>Training as a library call: FineTune.Run with progress, cancellation and a logger, its adapter loaded by PeftModel.</summary>
[Collection(SerialCollection.Name)]
public class FineTuneTests
{
    sealed class Recorder<T> : IProgress<T>
    {
        public List<T> Items { get; } = new();
        public Action<T>? Then { get; init; }
        public void Report(T value) { Items.Add(value); Then?.Invoke(value); }
    }

    sealed class ListLogger : ILogger
    {
        public List<string> Lines { get; } = new();
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Lines.Add(formatter(state, exception));
    }

    static FineTuneOptions Options(string dir, string name, MethodOptions method) => new()
    {
        Model = TestPaths.TinyLlama,
        DataFile = ReversalTask.Write(dir, 8),
        Method = method,
        Trainer = new TrainerOptions
        {
            OutDir = Path.Combine(dir, name), LearningRate = 5e-2, Schedule = LrScheduleKind.Constant, BatchSize = 4, MaxSeqLength = 32, MaxSteps = 3, Seed = 5,
        },
        Seed = 3,
    };

    [Fact]
    public void RunReportsEveryStepAndItsAdapterLoadsInPeftModel()
    {
        string dir = TestPaths.TempDir();
        var progress = new Recorder<TrainingProgress>();
        var logger = new ListLogger();
        var result = FineTune.Run(Options(dir, "lora", new MethodOptions { Method = "lora", Rank = 4, Alpha = 8 }) with { Logger = logger }, progress);

        var steps = progress.Items.Where(p => p.Loss is not null).ToList();
        Assert.Equal([1, 2, 3], steps.Select(p => p.Step));
        Assert.All(steps, p => Assert.Equal(3, p.TotalSteps));
        Assert.Equal(3, result.Train.Steps);
        Assert.Contains(logger.Lines, l => l.StartsWith("method LoRA r=4", StringComparison.Ordinal));
        Assert.True(result.TrainableParameters > 0 && result.TrainableParameters < result.TotalParameters);

        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: result.Train.FinalDir!);
        using var ids = tensor(new long[] { 5, 17, 42, 99 }).unsqueeze(0);
        using var _ = no_grad();
        using var adapted = model.Forward(ids);
        using (model.DisableAdapters())
        using (var baseLogits = model.Forward(ids))
            Assert.True(TestPaths.RelativeError(adapted, baseLogits) > 1e-4, "three training steps must move the adapter off the identity");
    }

    [Fact]
    public void CancellationStopsTheRunWithoutAFinalAdapter()
    {
        string dir = TestPaths.TempDir();
        using var cts = new CancellationTokenSource();
        var progress = new Recorder<TrainingProgress> { Then = p => { if (p.Step >= 1) cts.Cancel(); } };
        var result = FineTune.Run(Options(dir, "cancelled", new MethodOptions { Method = "lora", Rank = 4, Alpha = 8 }), progress, cts.Token);
        Assert.Null(result.Train.FinalDir);
        Assert.True(result.Train.Steps < 3);
    }

    [Fact]
    public void LibraryErrorsNameConfigKeys()
    {
        var e = Assert.Throws<ArgumentException>(() => FineTune.Run(Options(TestPaths.TempDir(), "bad", new MethodOptions { Method = "lora", Rank = 0 })));
        Assert.Equal("'r' must be positive (got 0)", e.Message);
    }
}
