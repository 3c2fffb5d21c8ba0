using PeftSharp.Data;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Tests.IO;

/// <summary>
/// Standing fuzz test (issue 16): seeded, bounded random corruptions of a safetensors file, an adapter folder and a JSONL
/// file, fed to the loaders. Each must load correctly or fail with a clear error: an InvalidDataException (or a
/// FileNotFoundException) whose message names the file. Any other exception is a loader bug.
/// </summary>
public class CorruptionFuzzTests
{
    const int Cases = 60; // 400 per loader also pass (5 s); 60 keeps the suite quick

    /// <summary>One random corruption: flip bytes, truncate, insert bytes, or overwrite a run near the start (headers).</summary>
    static byte[] Corrupt(byte[] original, Random rng)
    {
        var b = original.ToList();
        switch (rng.Next(5))
        {
            case 0: for (int i = 0, n = 1 + rng.Next(4); i < n; i++) b[rng.Next(b.Count)] ^= (byte)(1 << rng.Next(8)); break;
            case 1: b = b.Take(rng.Next(b.Count)).ToList(); break;
            case 2: b.InsertRange(rng.Next(b.Count), Enumerable.Range(0, 1 + rng.Next(16)).Select(_ => (byte)rng.Next(256))); break;
            case 3: for (int i = rng.Next(Math.Min(b.Count, 200)), n = 1 + rng.Next(12); i < b.Count && n-- > 0; i++) b[i] = (byte)rng.Next(256); break;
            default: b[rng.Next(b.Count)] = (byte)"{}[]\":,0-9eE.n\\"[rng.Next(15)]; break;
        }
        return b.ToArray();
    }

    static void AssertClearOrLoads(Action load, string mustName, string what)
    {
        try { load(); }
        catch (Exception e) when (e is InvalidDataException or FileNotFoundException)
        {
            Assert.True(e.Message.Contains(mustName, StringComparison.Ordinal), $"{what}: error does not name {mustName}: {e.Message}");
        }
        catch (Exception e)
        {
            Assert.Fail($"{what}: {e.GetType().Name} instead of a clear error: {e.Message}\n{e.StackTrace}");
        }
    }

    [Fact]
    public void CorruptSafetensorsFilesLoadOrFailClearly()
    {
        string source = Path.Combine(TestPaths.TinyLlama, "adapters", "lora", AdapterFolderFiles.WeightsFile);
        byte[] original = File.ReadAllBytes(source);
        var rng = new Random(20261129);
        string dir = TestPaths.TempDir();
        for (int c = 0; c < Cases; c++)
        {
            string path = Path.Combine(dir, $"case{c}.safetensors");
            File.WriteAllBytes(path, Corrupt(original, rng));
            AssertClearOrLoads(() =>
            {
                using var f = new SafeTensorsFile(path);
                foreach (var t in f.Tensors)
                {
                    using var x = f.Load(t.Name);
                    Assert.Equal(t.ElementCount, x.numel());
                }
            }, path, $"case {c}");
        }
    }

    [Fact]
    public void CorruptAdapterFoldersLoadOrFailClearly()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        var rng = new Random(7);
        for (int c = 0; c < Cases; c++)
        {
            string dir = Path.Combine(TestPaths.TempDir(), "lora");
            Tuners.PeftAdapterIOTests.CopyFixture("lora", dir);
            string victim = Path.Combine(dir, rng.Next(2) == 0 ? AdapterFolderFiles.ConfigFile : AdapterFolderFiles.WeightsFile);
            File.WriteAllBytes(victim, Corrupt(File.ReadAllBytes(victim), rng));
            AssertClearOrLoads(() => PeftAdapterIO.Load(model, dir, $"case{c}"), dir, $"case {c} ({Path.GetFileName(victim)})");
            foreach (var name in LoraModel.Of(model).Adapters.Keys.ToList()) LoraModel.Of(model).Delete(name);
        }
    }

    [Fact]
    public void CorruptJsonlFilesLoadOrFailClearly()
    {
        byte[] original = File.ReadAllBytes(ReversalTask.Write(TestPaths.TempDir(), 12));
        var rng = new Random(99);
        string dir = TestPaths.TempDir();
        for (int c = 0; c < Cases; c++)
        {
            string path = Path.Combine(dir, $"case{c}.jsonl");
            File.WriteAllBytes(path, Corrupt(original, rng));
            AssertClearOrLoads(() => Assert.NotEmpty(DatasetReader.Read(path)), path, $"case {c}");
        }
    }
}
