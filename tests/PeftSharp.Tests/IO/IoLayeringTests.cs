using System.Text.RegularExpressions;

namespace PeftSharp.Tests.IO;

/// <summary>
/// Issue 13 item 2: src/PeftSharp/IO keeps only format code, with no upward dependency on the tuners or training. A
/// source check (no Roslyn): no IO file imports those namespaces or names a type declared under Tuners/ or Training/
/// (LoraConfig and the other configs live in namespace PeftSharp, so an import check alone would miss them).
/// </summary>
public class IoLayeringTests
{
    static readonly string Src = Path.Combine(TestPaths.RepoRoot, "src", "PeftSharp");

    /// <summary>Top-level types declared in a folder (file-scoped namespaces: declarations start their line).</summary>
    static IEnumerable<string> TypesDeclaredUnder(string folder) =>
        Directory.GetFiles(Path.Combine(Src, folder), "*.cs", SearchOption.AllDirectories)
            .SelectMany(f => Regex.Matches(File.ReadAllText(f), @"^(?:(?:public|internal|sealed|static|abstract|partial|readonly)\s+)*(?:class|record|struct|interface|enum)\s+([A-Z]\w*)", RegexOptions.Multiline))
            .Select(m => m.Groups[1].Value);

    /// <summary>Code without comments and string literals (a type named in a doc comment or a message is no dependency).</summary>
    static string Code(string file) =>
        Regex.Replace(string.Join('\n', File.ReadAllLines(file).Select(l => l.Split("//")[0])), "\"(?:[^\"\\\\]|\\\\.)*\"", "\"\"");

    [Fact]
    public void IoReferencesNoTunerOrTrainingType()
    {
        var upward = TypesDeclaredUnder("Tuners").Concat(TypesDeclaredUnder("Training")).ToHashSet();
        Assert.Contains("LoraConfig", upward);   // the check sees the configs in namespace PeftSharp
        Assert.Contains("Trainer", upward);
        var offences = new List<string>();
        foreach (var file in Directory.GetFiles(Path.Combine(Src, "IO"), "*.cs", SearchOption.AllDirectories))
        {
            string code = Code(file), name = Path.GetRelativePath(Src, file);
            foreach (Match u in Regex.Matches(code, @"^using\s+(?:static\s+)?(PeftSharp\.(?:Tuners|Training)\S*);", RegexOptions.Multiline))
                offences.Add($"{name}: using {u.Groups[1].Value}");
            offences.AddRange(upward.Where(t => Regex.IsMatch(code, $@"\b{t}\b")).Select(t => $"{name}: names {t}"));
        }
        Assert.True(offences.Count == 0, string.Join("\n", offences));
    }
}
