using PeftSharp.Data;

namespace PeftSharp.Tests.Data;

public class DatasetReaderTests
{
    static string Write(string name, string content)
    {
        string path = Path.Combine(TestPaths.TempDir(), name);
        File.WriteAllText(path, content);
        return path;
    }

    [Fact]
    public void ReadsAllThreeJsonlShapes()
    {
        var path = Write("d.jsonl",
            "{\"text\": \"plain\"}\n\n" +
            "{\"prompt\": \"Q:\", \"completion\": \" A\"}\n" +
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n");
        var xs = DatasetReader.Read(path);
        Assert.Equal(3, xs.Count);
        Assert.Equal([new TextSegment("plain", true)], xs[0].Segments);
        Assert.Null(xs[0].PromptAndAnswer);
        Assert.Equal(("Q:", " A"), xs[1].PromptAndAnswer);
        Assert.Equal($"{path}:3", xs[1].Source);
        Assert.Equal([new("<|user|>\n", false), new("hi", false), new("\n<|assistant|>\n", false), new("yo", true)], xs[2].Segments);
        Assert.Equal(("<|user|>\nhi\n<|assistant|>\n", "yo"), xs[2].PromptAndAnswer);
    }

    [Fact]
    public void PlainTextIsSplitIntoParagraphs()
    {
        var xs = DatasetReader.Read(Write("d.txt", "one\ntwo\n\n\nthree\n"));
        Assert.Equal(["one\ntwo", "three"], xs.Select(x => x.Segments.Single().Text));
        Assert.EndsWith(":5", xs[1].Source);
    }

    [Theory]
    [InlineData("{\"text\": \"ok\"}\n{\"text\": \"broken\"\n", ":2", "malformed JSON")]
    [InlineData("{\"prompt\": \"only\"}\n", ":1", "needs both")]
    [InlineData("{\"text\": 5}\n", ":1", "'text' must be a string")]
    [InlineData("{\"foo\": \"bar\"}\n", ":1", "expected")]
    [InlineData("[1, 2]\n", ":1", "JSON object")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n", ":1", "no assistant")]
    public void BadLinesNameFileAndLine(string content, string line, string cause)
    {
        var path = Write("bad.jsonl", content);
        var e = Assert.Throws<InvalidDataException>(() => DatasetReader.Read(path));
        Assert.Contains(path + line + ":", e.Message);
        Assert.Contains(cause, e.Message);
    }

    [Fact]
    public void EmptyDatasetIsAnError()
    {
        var path = Write("empty.jsonl", "\n  \n");
        var e = Assert.Throws<InvalidDataException>(() => DatasetReader.Read(path));
        Assert.Contains("empty", e.Message);
        Assert.Throws<FileNotFoundException>(() => DatasetReader.Read(path + ".missing"));
    }
}
