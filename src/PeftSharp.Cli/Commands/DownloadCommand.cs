using System.ComponentModel;
using PeftSharp.Hub;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// peft download ORG/NAME [--revision R]: fetches what loading the repo needs into the shared Hugging Face cache and
/// prints the snapshot folder as the last line (so `$(./peft download ORG/NAME | tail -1)` is a model folder).
/// </summary>
public sealed class DownloadCommand : Command<DownloadCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<REPO>")]
        [Description("Hugging Face repo id: ORG/NAME or ORG/NAME@REVISION")]
        public string Repo { get; set; } = "";

        [CommandOption("--revision <REV>")]
        [Description("Branch, tag or commit (default: main, or the @REVISION of REPO)")]
        public string? Revision { get; set; }

        public override ValidationResult Validate()
        {
            if (!RepoId.TryParse(Repo, out var repo)) return ValidationResult.Error($"REPO: '{Repo}' is not a Hugging Face repo id (ORG/NAME or ORG/NAME@REVISION)");
            if (Revision is not null && Repo.Contains('@') && Revision != repo.Revision)
                return ValidationResult.Error($"--revision {Revision} contradicts the revision in '{Repo}'");
            if (Revision is not null && !RepoId.TryParse($"{repo.Id}@{Revision}", out _)) return ValidationResult.Error($"--revision: '{Revision}' is not a valid revision");
            return ValidationResult.Success();
        }

        public string Spec => Revision is null || Repo.Contains('@') ? Repo : $"{Repo}@{Revision}";
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        Console.WriteLine(HubCli.Download(s.Spec));
        return 0;
    }
}
