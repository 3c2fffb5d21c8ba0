using System.ComponentModel;
using PeftSharp.Models;
using PeftSharp.Serving.Adapters;
using PeftSharp.Serving.Hosting;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>peft serve: an OpenAI-compatible HTTP server for one base and many adapters (see src/PeftSharp.Serving).</summary>
public sealed class ServeCommand : AsyncCommand<ServeCommand.Settings>
{
    public sealed class Settings : ModelSettings
    {
        [CommandOption("--adapter <NAME=DIR>")]
        [Description("Adapter to serve from the start (repeatable; NAME=DIR, a folder or a Hub repo id ORG/NAME or ORG/NAME@REV); DIR alone uses the folder name")]
        public string[] Adapters { get; set; } = [];

        [CommandOption("--adapter-root <DIR>")]
        [Description("Allow POST /v1/adapters to load folders under DIR (off without it)")]
        public string? AdapterRoot { get; set; }

        [CommandOption("--host <IP>")]
        [DefaultValue("127.0.0.1")]
        public string Host { get; set; } = "127.0.0.1";

        [CommandOption("--port <P>")]
        [DefaultValue(8000)]
        public int Port { get; set; } = 8000;

        [CommandOption("--api-key <KEY>")]
        [Description("Require Authorization: Bearer KEY on every /v1 endpoint")]
        public string? ApiKey { get; set; }

        [CommandOption("--max-adapters <N>")]
        [Description("Resident adapters; the least recently used unleased one is evicted and reloaded on demand")]
        [DefaultValue(64)]
        public int MaxAdapters { get; set; } = 64;

        [CommandOption("--max-batch <N>")]
        [Description("Requests decoded together (1 = one at a time)")]
        [DefaultValue(32)]
        public int MaxBatch { get; set; } = 32;

        [CommandOption("--max-prefill-batch <N>")]
        [Description("Waiting requests prefilled together in one forward (1 = each alone; default 8, or --max-batch when smaller)")]
        public int? MaxPrefillBatch { get; set; }

        [CommandOption("--max-prefill-tokens <T>")]
        [Description("Most tokens one batched prefill forward holds (requests x longest prompt; a longer prompt goes alone): bounds prefill memory, as `peft plan --serve --max-prefill-tokens` counts it")]
        [DefaultValue(PeftSharp.Memory.ServeRequest.DefaultMaxPrefillTokens)]
        public int MaxPrefillTokens { get; set; } = PeftSharp.Memory.ServeRequest.DefaultMaxPrefillTokens;

        [CommandOption("--max-queue <N>")]
        [Description("Waiting requests before new ones get HTTP 429")]
        [DefaultValue(256)]
        public int MaxQueue { get; set; } = 256;

        [CommandOption("--log-level <LEVEL>")]
        [Description("Least severe log level on the console (stderr): trace, debug, information, warning, error, critical, none. Server errors and refused adapter loads are logged with their cause")]
        [DefaultValue("information")]
        public string LogLevel { get; set; } = "information";

        [CommandOption("--chat-template <FILE>")]
        [Description(ChatCli.TemplateOptionHelp)]
        public string? ChatTemplate { get; set; }

        // Kept so scripts written for the earlier opt-in keep working: what it chose (freed memory given back, resident
        // memory under the plan) is now how every `peft serve` runs.
        [CommandOption("--return-frees", IsHidden = true)]
        [Description("No effect: freed memory is returned by default now (the buffer cache); kept for older scripts")]
        public bool ReturnFrees { get; set; }

        [CommandOption("--served-name <NAME>")]
        [Description("Model id of the base (default: the model folder's name)")]
        public string? ServedName { get; set; }

        public ServerOptions Options => new()
        {
            Host = Host, Port = Port, ApiKey = ApiKey, AdapterRoot = AdapterRoot, MaxAdapters = MaxAdapters, MaxBatch = MaxBatch, MaxPrefillBatch = MaxPrefillBatch, MaxPrefillTokens = MaxPrefillTokens,
            MaxQueue = MaxQueue, ServedName = ServedName, Adapters = Adapters.Select(ParseAdapter).ToList(), LogLevel = ParseLogLevel(LogLevel),
        };

        static Microsoft.Extensions.Logging.LogLevel ParseLogLevel(string level) =>
            Enum.TryParse<Microsoft.Extensions.Logging.LogLevel>(level, ignoreCase: true, out var l) && Enum.IsDefined(l) && !int.TryParse(level, out _) ? l
                : throw new ArgumentException($"--log-level '{level}' is not one of trace, debug, information, warning, error, critical, none");

        public override ValidationResult Validate()
        {
            var r = base.Validate();
            if (!r.Successful) return r;
            // Repo ids become NAME=<snapshot folder> once, here, so Options (read again at start) sees plain folders.
            try { Adapters = Adapters.Select(ResolveAdapter).ToArray(); }
            catch (IOException e) { return ValidationResult.Error(e.Message); }
            try { Options.Validate(); }
            catch (ArgumentException e) { return ValidationResult.Error(e.Message); }
            return ValidationResult.Success();
        }

        static string ResolveAdapter(string spec)
        {
            int eq = spec.IndexOf('=');
            string dir = eq >= 0 ? spec[(eq + 1)..] : spec;
            if (Directory.Exists(dir) || !Hub.RepoId.TryParse(dir, out var repo)) return spec;
            string name = eq >= 0 ? spec[..eq] : repo.Id.Split('/')[1];
            return $"{name}={HubCli.ResolveFolder(dir, $"--adapter {spec}")}";
        }

        static (string, string) ParseAdapter(string spec)
        {
            int eq = spec.IndexOf('=');
            string dir = eq >= 0 ? spec[(eq + 1)..] : spec;
            string name = eq >= 0 ? spec[..eq] : Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir)));
            if (!Directory.Exists(dir)) throw new ArgumentException($"--adapter {spec}: folder '{dir}' not found");
            return (name, dir);
        }
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        // peft train's allocator (Native/TensorAllocator, before the first tensor): freed buffers reused by size under the
        // peak in use, so resident memory follows `peft plan --serve` at glibc's default heap's speed or better
        // (bench/serve-vs-plan.sh); PEFTSHARP_TENSOR_CACHE=0: glibc's fixed mmap threshold alone (the same plan, slower).
        PeftSharp.Native.TensorAllocator.Ensure();
        if (s.ReturnFrees) Console.Error.WriteLine("--return-frees has no effect: peft serve now returns freed memory by default (the buffer cache below)");
        Console.Error.WriteLine($"cpu allocator {PeftSharp.Native.TensorAllocator.Description}");
        using var model = s.LoadModel();
        using var tok = TextTokenizer.FromFolder(s.Model, model.Config);
        var chat = ChatCli.Prompter(s.Model, s.ChatTemplate);
        _ = chat.Template; // a template that cannot be used fails here, not on the first chat request
        ChatCli.WarnOnTemplateMismatch(chat, s.Options.Adapters.Select(a => a.Folder));
        var options = s.Options with { Chat = chat };
        string name = options.ServedName ?? (Hub.RepoId.TryParse(s.ModelGiven, out var repo) && !Directory.Exists(s.ModelGiven) ? repo.Id
            : Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(s.Model))));
        await using var server = await PeftServer.StartAsync(model, tok, name, options, new PeftAdapterLoader());
        PeftSharp.Native.TensorAllocator.ReleaseIdle();   // what loading the model and adapters freed is not kept for serving
        Console.Error.WriteLine($"serving '{name}' with {server.State.Adapters.Current().Count} adapter(s) on {server.BaseAddress} (Ctrl+C stops)");
        // SIGTERM reaches the host; Ctrl+C is taken by the CLI framework and arrives as the cancellation token.
        var cancelled = new TaskCompletionSource();
        await using (cancellationToken.Register(() => cancelled.TrySetResult()))
            await Task.WhenAny(server.WaitForShutdownAsync(), cancelled.Task);
        if (PeftSharp.Native.TensorAllocator.Cached) Console.Error.WriteLine($"cpu allocator {PeftSharp.Native.TensorBlockCache.Summary()}");
        return 0;
    }
}
