using System.Text;
using PeftSharp.Cli.Commands;
using PeftSharp.Data;
using PeftSharp.Models;

namespace PeftSharp.Tests.Data;

/// <summary>Issue 16 items 8 and 11: huge lines, invalid UTF-8 and binary data, mostly-unknown tokens.</summary>
[Collection("console")]
public class DataFileTests
{
    [Fact]
    public void AHundredMegabyteLineIsRefusedNamingFileAndLineWithoutReadingItIntoMemory()
    {
        string path = Path.Combine(TestPaths.TempDir(), "big.jsonl");
        using (var f = File.Create(path))
        {
            f.Write("{\"text\": \"fine\"}\n{\"text\": \""u8);
            var chunk = Enumerable.Repeat((byte)'a', 1 << 20).ToArray();
            for (int i = 0; i < 100; i++) f.Write(chunk);
            f.Write("\"}\n"u8);
        }
        try
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            var e = Assert.Throws<InvalidDataException>(() => DatasetReader.Read(path));
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.Equal($"{path}:2: line longer than {TextLines.MaxLineBytes:N0} bytes (the limit for one example; split it or use plain text paragraphs)", e.Message);
            // The line as a string would be 200 MB (UTF-16); reading stops at the 8 MiB limit.
            Assert.True(allocated < 48L << 20, $"allocated {allocated:N0} bytes");
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void InvalidUtf8AndBinaryDataAreRefusedWithFileAndLine()
    {
        string dir = TestPaths.TempDir();
        string jsonl = Path.Combine(dir, "latin1.jsonl");
        File.WriteAllBytes(jsonl, [.. "{\"text\": \"ok\"}\r\n{\"text\": \"ok\"}\n"u8, .. Encoding.Latin1.GetBytes("{\"text\": \"caf\u00e9\"}\n")]);
        Assert.Equal($"{jsonl}:3: not valid UTF-8 text (bad byte at column 14); convert the file to UTF-8",
            Assert.Throws<InvalidDataException>(() => DatasetReader.Read(jsonl)).Message);

        string binary = Path.Combine(dir, "data.txt");
        File.WriteAllBytes(binary, [.. "a paragraph\n\nanother\n"u8, 0x50, 0x4B, 0x03, 0x04, 0x00, 0x00]);
        Assert.StartsWith($"{binary}:4: NUL byte at column 5: a binary file",
            Assert.Throws<InvalidDataException>(() => DatasetReader.Read(binary)).Message);

        // A byte order mark and CRLF line ends are fine.
        string bom = Path.Combine(dir, "bom.jsonl");
        File.WriteAllBytes(bom, [0xEF, 0xBB, 0xBF, .. "{\"text\": \"caf\u00e9\"}\r\n"u8]);
        Assert.Equal("caf\u00e9", Assert.Single(DatasetReader.Read(bom)).Segments[0].Text);
    }

    [Fact]
    public void MostlyUnknownTokensWarnOnce()
    {
        string baseDir = Path.Combine(TrainSettings.DemoDir, "base");
        using var tok = TextTokenizer.FromFolder(baseDir);
        Assert.NotNull(tok.UnkId);
        string dir = TestPaths.TempDir(), foreign = Path.Combine(dir, "foreign.jsonl");
        File.WriteAllLines(foreign, Enumerable.Range(0, 8).Select(i => $"{{\"prompt\": \"\u4f60\u597d \u4e16\u754c {i}\", \"completion\": \" \u518d\u89c1 \u670b\u53cb\"}}"));
        using (var warnings = new CapturedWarnings())
        {
            TrainingData.Load(foreign, tok, 32, packing: false);
            string w = Assert.Single(warnings.Messages);
            Assert.Contains("are unknown (<unk>) to the tokenizer", w);
            Assert.StartsWith($"{foreign}: ", w);
        }
        using (var warnings = new CapturedWarnings())
        {
            TrainingData.Load(Path.Combine(TrainSettings.DemoDir, "train.jsonl"), tok, 32, packing: false);
            Assert.Empty(warnings.Messages);
        }
    }
}
