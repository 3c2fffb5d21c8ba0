using PeftSharp.Training;

namespace PeftSharp.Tests.Training;

public class LrScheduleTests
{
    [Fact]
    public void WarmupThenDecay()
    {
        var cos = new LrSchedule(LrScheduleKind.Cosine, 1.0, WarmupSteps: 4, TotalSteps: 14);
        Assert.Equal([0.25, 0.5, 0.75, 1.0], Enumerable.Range(0, 4).Select(cos.At));
        Assert.Equal(1.0, cos.At(4), 12);
        Assert.Equal(0.5, cos.At(9), 12);               // halfway through the 10 decay steps
        Assert.Equal(0.0, cos.At(14), 12);
        var lin = new LrSchedule(LrScheduleKind.Linear, 2.0, 0, 10);
        Assert.Equal(2.0, lin.At(0), 12);
        Assert.Equal(1.0, lin.At(5), 12);
        Assert.Equal(0.2, lin.At(9), 12);
        var con = new LrSchedule(LrScheduleKind.Constant, 3.0, 2, 10);
        Assert.Equal([1.5, 3.0, 3.0], new[] { 0, 2, 9 }.Select(con.At));
        Assert.Equal(LrScheduleKind.Linear, LrSchedule.Parse("Linear"));
        Assert.Throws<ArgumentException>(() => LrSchedule.Parse("step"));
    }
}
