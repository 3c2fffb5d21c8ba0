using PeftSharp.Generation;

namespace PeftSharp.Tests.Generation;

public class StopMatcherTests
{
    [Fact]
    public void StopStringAndWhatFollowsAreCutAndPossibleStartsHeldBack()
    {
        var m = new StopMatcher(["END", "\n\n"]);
        Assert.Equal("a", m.Push("abE"));      // the last 2 characters could start "END"
        Assert.Equal("b", m.Push("x"));
        Assert.Equal("Ex", m.Push("EN"));
        Assert.Equal("", m.Push("Dtail"));
        Assert.True(m.Stopped);
        Assert.Equal("", m.Push("more"));
        Assert.Equal("", m.Flush());
    }

    [Fact]
    public void WithoutStopStringsEveryDeltaPassesStraightThrough()
    {
        var m = new StopMatcher([]);
        Assert.Equal("a", m.Push("a"));
        Assert.Equal("", m.Push(""));
        Assert.Equal("bc", m.Push("bc"));
        Assert.Equal("", m.Flush());
        Assert.False(m.Stopped);
    }

    /// <summary>The matcher keeps only the text a new match can start in; it must answer as a search of all the text does.</summary>
    [Fact]
    public void AnswersAsSearchingTheWholeTextEveryTime()
    {
        var rng = new Random(5);
        string Random(int min, int max) => new(Enumerable.Range(0, rng.Next(min, max + 1)).Select(_ => "abc"[rng.Next(3)]).ToArray());
        for (int trial = 0; trial < 3000; trial++)
        {
            var stops = Enumerable.Range(0, rng.Next(0, 5)).Select(_ => Random(1, 4)).ToArray();
            var m = new StopMatcher(stops);
            var reference = new WholeTextStopMatcher(stops);
            for (int step = 0; step < 12; step++)
            {
                if (rng.Next(10) == 0)
                {
                    Assert.Equal(reference.Flush(), m.Flush());
                    continue;
                }
                string delta = Random(0, 3);
                Assert.Equal(reference.Push(delta), m.Push(delta));
                Assert.Equal(reference.Stopped, m.Stopped);
            }
            Assert.Equal(reference.Flush(), m.Flush());
        }
    }

    /// <summary>StopMatcher as it was: every push searches the whole text so far.</summary>
    sealed class WholeTextStopMatcher(IReadOnlyList<string> stops)
    {
        readonly System.Text.StringBuilder _text = new();
        int _sent;
        readonly int _hold = stops.Count == 0 ? 0 : stops.Max(s => s.Length) - 1;

        public bool Stopped { get; private set; }

        public string Push(string delta)
        {
            if (Stopped) return "";
            _text.Append(delta);
            string all = _text.ToString();
            int cut = stops.Select(s => all.IndexOf(s, StringComparison.Ordinal)).Where(i => i >= 0).DefaultIfEmpty(-1).Min();
            if (cut >= 0)
            {
                Stopped = true;
                return Take(all, Math.Max(cut, _sent));
            }
            return Take(all, Math.Max(_sent, all.Length - _hold));
        }

        public string Flush() => Stopped ? "" : Take(_text.ToString(), _text.Length);

        string Take(string all, int upTo)
        {
            string s = all[_sent..upTo];
            _sent = upTo;
            return s;
        }
    }
}
