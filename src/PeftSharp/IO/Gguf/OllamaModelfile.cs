using System.Text;
using PeftSharp.Chat;

namespace PeftSharp.IO.Gguf;

/// <summary>
/// An Ollama Modelfile for an exported GGUF: FROM, ADAPTER, TEMPLATE (the model's chat template as an Ollama Go
/// template) and PARAMETER stop. Ollama itself turns a known HF template into a Go template of its own; here the
/// model's Jinja template is rendered on a probe conversation and compared with each known family's rendering (the
/// renderings of ollama's template/testdata for chatml, llama3, zephyr, phi-3, gemma; Llama 2 and Mistral as their
/// own HF templates render), and the family's Go template is used: it renders the same text (checked with Go's
/// text/template at development time, tests/PeftSharp.Tests/IO/Gguf/GoTemplateCheck). An unknown template gets no
/// TEMPLATE line: Ollama then falls back to the GGUF's tokenizer.chat_template.
/// </summary>
internal static class OllamaModelfile
{
    /// <summary>A chat format: its rendering of the probe with and without the system turn (leading BOS removed), its Go template, its end-of-turn text.</summary>
    public sealed record Family(string Name, string WithSystem, string WithoutSystem, string GoTemplate, string EndOfTurn);

    // The probe conversation of ollama's template/testdata (system-user-assistant-user).
    const string Sys = "You are a helpful assistant.", U1 = "Hello, how are you?", A1 = "I'm doing great. How can I help you today?",
        U2 = "I'd like to show off how chat templating works!";

    public static readonly IReadOnlyList<Family> Families =
    [
        new("chatml",
            $"<|im_start|>system\n{Sys}<|im_end|>\n<|im_start|>user\n{U1}<|im_end|>\n<|im_start|>assistant\n{A1}<|im_end|>\n<|im_start|>user\n{U2}<|im_end|>\n<|im_start|>assistant\n",
            $"<|im_start|>user\n{U1}<|im_end|>\n<|im_start|>assistant\n{A1}<|im_end|>\n<|im_start|>user\n{U2}<|im_end|>\n<|im_start|>assistant\n",
            "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n", "<|im_end|>"),
        new("llama3",
            $"<|start_header_id|>system<|end_header_id|>\n\n{Sys}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{U1}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{A1}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{U2}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            $"<|start_header_id|>user<|end_header_id|>\n\n{U1}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{A1}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{U2}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
        new("zephyr",
            $"<|system|>\n{Sys}</s>\n<|user|>\n{U1}</s>\n<|assistant|>\n{A1}</s>\n<|user|>\n{U2}</s>\n<|assistant|>\n",
            $"<|user|>\n{U1}</s>\n<|assistant|>\n{A1}</s>\n<|user|>\n{U2}</s>\n<|assistant|>\n",
            "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}</s>\n{{ end }}<|assistant|>\n", "</s>"),
        new("phi3",
            $"<|system|>\n{Sys}<|end|>\n<|user|>\n{U1}<|end|>\n<|assistant|>\n{A1}<|end|>\n<|user|>\n{U2}<|end|>\n<|assistant|>\n",
            $"<|user|>\n{U1}<|end|>\n<|assistant|>\n{A1}<|end|>\n<|user|>\n{U2}<|end|>\n<|assistant|>\n",
            "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n", "<|end|>"),
        // Gemma has no system role: the system text opens the first user turn.
        new("gemma",
            $"<start_of_turn>user\n{Sys}\n{U1}<end_of_turn>\n<start_of_turn>model\n{A1}<end_of_turn>\n<start_of_turn>user\n{U2}<end_of_turn>\n<start_of_turn>model\n",
            $"<start_of_turn>user\n{U1}<end_of_turn>\n<start_of_turn>model\n{A1}<end_of_turn>\n<start_of_turn>user\n{U2}<end_of_turn>\n<start_of_turn>model\n",
            "{{- $first := true }}{{- range .Messages }}{{- if ne .Role \"system\" }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}{{ .Role }}{{ end }}\n{{ if and $first $.System }}{{ $.System }}\n{{ end }}{{ .Content }}<end_of_turn>\n{{ $first = false }}{{- end }}{{- end }}<start_of_turn>model\n",
            "<end_of_turn>"),
        // Llama 2 chat as its HF template renders (BOS before every later [INST]; <<SYS>> inside the first).
        new("llama2",
            $"[INST] <<SYS>>\n{Sys}\n<</SYS>>\n\n{U1} [/INST] {A1} </s><s>[INST] {U2} [/INST]",
            $"[INST] {U1} [/INST] {A1} </s><s>[INST] {U2} [/INST]",
            "{{- $first := true }}{{- range .Messages }}{{- if eq .Role \"user\" }}{{ if not $first }}<s>{{ end }}[INST] {{ if and $first $.System }}<<SYS>>\n{{ $.System }}\n<</SYS>>\n\n{{ end }}{{ .Content }} [/INST]{{ $first = false }}{{- else if eq .Role \"assistant\" }} {{ .Content }} </s>{{ end }}{{- end }}",
            "</s>"),
        // Mistral Instruct v0.1 as its HF template renders (it refuses a system turn; Ollama's way, "system\n\n" before the first user text, is used).
        new("mistral",
            $"[INST] {Sys}\n\n{U1} [/INST]{A1}</s> [INST] {U2} [/INST]",
            $"[INST] {U1} [/INST]{A1}</s> [INST] {U2} [/INST]",
            "{{- $first := true }}{{- range .Messages }}{{- if eq .Role \"user\" }}[INST] {{ if and $first $.System }}{{ $.System }}\n\n{{ end }}{{ .Content }} [/INST]{{ $first = false }}{{- else if eq .Role \"assistant\" }}{{ .Content }}</s> {{ end }}{{- end }}",
            "</s>"),
    ];

    /// <summary>
    /// A family found for a template, and the system text the template puts in by itself when a conversation has no
    /// system turn (Qwen2.5's "You are Qwen, ...", SmolLM's): the Modelfile's SYSTEM, which Ollama prepends to a chat
    /// that starts without one (server/routes.go, ChatHandler), so Ollama renders such chats as the HF template does.
    /// </summary>
    public sealed record Detection(Family Family, string? DefaultSystem);

    /// <summary>
    /// The family whose rendering of the probe equals the template's, with and without the system turn (without it, the
    /// template may add a system text of its own: <see cref="Detection.DefaultSystem"/>), or null.
    /// </summary>
    public static Detection? Detect(ChatTemplate template)
    {
        // llama.cpp adds BOS itself, so a template's leading bos_token is not part of the turn format; but a template
        // may also begin with text that merely equals the BOS token (SmolLM's bos_token is <|im_start|>): both are tried.
        string? bos = template.SpecialTokens.GetValueOrDefault("bos_token");
        string[] Forms(string? s) => s is null ? [] : !string.IsNullOrEmpty(bos) && s.StartsWith(bos, StringComparison.Ordinal) ? [s, s[bos.Length..]] : [s];
        string? Try(params (string, string)[] messages)
        {
            try { return template.Render(messages, addGenerationPrompt: true); }
            catch (InvalidDataException) { return null; } // the template refuses this conversation (e.g. no system role)
        }
        string? withSystem = Try(("system", Sys), ("user", U1), ("assistant", A1), ("user", U2));
        string? without = Try(("user", U1), ("assistant", A1), ("user", U2));
        foreach (var f in Families)
        {
            // A template refusing the system turn (Mistral v0.1, Gemma 2) is matched on the conversation without it.
            if (withSystem is null)
            {
                if (Forms(without).Contains(f.WithoutSystem)) return new(f, null);
                continue;
            }
            if (!Forms(withSystem).Contains(f.WithSystem)) continue;
            if (without is null || Forms(without).Contains(f.WithoutSystem)) return new(f, null);
            // Without a system turn the template renders one of its own: the family's rendering with that text as system.
            if (Forms(without).Select(w => SystemIn(f, w)).FirstOrDefault(s => s is not null) is { } own) return new(f, own);
        }
        return null;
    }

    /// <summary>The system text <paramref name="rendering"/> holds where the family's probe rendering holds the probe's, or null.</summary>
    static string? SystemIn(Family f, string rendering)
    {
        int at = f.WithSystem.IndexOf(Sys, StringComparison.Ordinal);
        string before = f.WithSystem[..at], after = f.WithSystem[(at + Sys.Length)..];
        if (rendering.Length <= before.Length + after.Length || !rendering.StartsWith(before, StringComparison.Ordinal) || !rendering.EndsWith(after, StringComparison.Ordinal))
            return null;
        string text = rendering[before.Length..^after.Length];
        // Not a system text: a turn marker inside it, or what a Modelfile's quoted value cannot hold.
        return text.Contains(f.EndOfTurn, StringComparison.Ordinal) || text.Contains("\"\"\"", StringComparison.Ordinal) ? null : text;
    }

    /// <summary>
    /// The Modelfile text: FROM <paramref name="ggufFile"/> (relative to the Modelfile), ADAPTER if given, TEMPLATE
    /// when the family is known, SYSTEM when the template has a default system text, and one PARAMETER stop per
    /// end-of-turn text (the family's, then the model's own stop tokens).
    /// </summary>
    public static string Write(string ggufFile, string? adapterFile, Detection? detected, IEnumerable<string> modelStops)
    {
        var family = detected?.Family;
        var sb = new StringBuilder();
        sb.Append("FROM ./").Append(ggufFile).Append('\n');
        if (adapterFile is not null) sb.Append("ADAPTER ./").Append(adapterFile).Append('\n');
        if (family is not null) sb.Append("TEMPLATE \"\"\"").Append(family.GoTemplate).Append("\"\"\"\n");
        if (detected?.DefaultSystem is { } system) sb.Append("SYSTEM \"\"\"").Append(system).Append("\"\"\"\n");
        var stops = (family is null ? [] : new[] { family.EndOfTurn }).Concat(modelStops).Where(s => s.Length > 0).Distinct();
        // Ollama's Modelfile parser strips the quotes and unescapes nothing (parser/parser.go, unquote): a backslash or a
        // quote inside stays as written, so none is escaped here.
        foreach (var stop in stops) sb.Append("PARAMETER stop \"").Append(stop).Append("\"\n");
        return sb.ToString();
    }
}
