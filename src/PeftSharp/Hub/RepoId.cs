using System.Text.RegularExpressions;

namespace PeftSharp.Hub;

/// <summary>
/// A Hugging Face model repo named on the command line: `ORG/NAME` or `ORG/NAME@REVISION` (a branch, tag or commit).
/// The name rules are huggingface_hub's `validate_repo_id` (utils/_validators.py), with the namespace required: a bare
/// `NAME` is far more often a mistyped folder than one of the Hub's few legacy un-namespaced repos.
/// </summary>
/// <param name="Id">`ORG/NAME`.</param>
/// <param name="Revision">A branch, tag or commit hash; <see cref="DefaultRevision"/> when the text names none.</param>
public sealed partial record RepoId(string Id, string Revision)
{
    /// <summary>The revision of `ORG/NAME` without `@`: the main branch, as on the Hub.</summary>
    public const string DefaultRevision = "main";

    /// <summary>huggingface_hub's REPO_ID_REGEX with the optional namespace made mandatory.</summary>
    [GeneratedRegex(@"^\b[\w\-.]+\b/\b[\w\-.]{1,96}\b$")]
    private static partial Regex IdPattern();

    /// <summary>A full commit hash (huggingface_hub's REGEX_COMMIT_HASH): such a revision needs no refs/ lookup.</summary>
    [GeneratedRegex("^[0-9a-f]{40}$")]
    internal static partial Regex CommitHash();

    /// <summary>The cache folder name: `models--ORG--NAME` (repo_folder_name with REPO_ID_SEPARATOR "--").</summary>
    internal string FolderName => "models--" + Id.Replace("/", "--");

    internal bool RevisionIsCommit => CommitHash().IsMatch(Revision);

    /// <summary>
    /// The repo and commit of a cache snapshot folder (`.../models--ORG--NAME/snapshots/COMMIT`), else null: what a model
    /// loaded from the cache was called. Exact because a repo id never holds "--" (validate_repo_id).
    /// </summary>
    internal static RepoId? OfSnapshotFolder(string folder)
    {
        string full = Path.GetFullPath(folder).TrimEnd(Path.DirectorySeparatorChar);
        string? snapshots = Path.GetDirectoryName(full), repoFolder = snapshots is null ? null : Path.GetDirectoryName(snapshots);
        string commit = Path.GetFileName(full), name = repoFolder is null ? "" : Path.GetFileName(repoFolder);
        if (Path.GetFileName(snapshots) != "snapshots" || !name.StartsWith("models--", StringComparison.Ordinal) || !CommitHash().IsMatch(commit)) return null;
        return TryParse(name["models--".Length..].Replace("--", "/") + "@" + commit, out var repo) ? repo : null;
    }

    /// <summary>`ORG/NAME`, with `@REVISION` when the revision is not <see cref="DefaultRevision"/> (what <see cref="Parse"/> reads back).</summary>
    public override string ToString() => Revision == DefaultRevision ? Id : $"{Id}@{Revision}";

    /// <summary>Reads `ORG/NAME` or `ORG/NAME@REVISION`; false (and <paramref name="repo"/> null) when the text is not a valid repo id.</summary>
    public static bool TryParse(string value, out RepoId repo)
    {
        repo = null!;
        if (string.IsNullOrEmpty(value)) return false;
        int at = value.IndexOf('@');
        string id = at < 0 ? value : value[..at];
        string revision = at < 0 ? DefaultRevision : value[(at + 1)..];
        if (!IdPattern().IsMatch(id) || id.Contains("--") || id.Contains("..") || id.EndsWith(".git", StringComparison.Ordinal)) return false;
        // A revision becomes a path under refs/ (refs/pr/1 included), so it may not climb out of it.
        if (revision.Length == 0 || revision.Any(char.IsWhiteSpace) || revision.Contains('\\') || revision.Contains('\0')
            || revision.Split('/').Any(part => part is "" or "." or "..")) return false;
        repo = new RepoId(id, revision);
        return true;
    }

    /// <summary>Reads `ORG/NAME` or `ORG/NAME@REVISION`.</summary>
    /// <exception cref="ArgumentException">The text is not a valid repo id (the message quotes it).</exception>
    public static RepoId Parse(string value) =>
        TryParse(value, out var repo) ? repo
        : throw new ArgumentException($"'{value}' is not a Hugging Face repo id (ORG/NAME or ORG/NAME@REVISION)");
}
