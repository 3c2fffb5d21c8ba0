using PeftSharp.Memory;

namespace PeftSharp.Memory.Tests;

public class ValidationAndConfigTests
{
    static string Fixture => Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-llama-config.json");

    [Theory]
    [InlineData("rank")]
    [InlineData("batch")]
    [InlineData("seq")]
    [InlineData("gpus")]
    public void Non_positive_knobs_are_errors_naming_the_field(string field)
    {
        var request = field switch
        {
            "rank" => new PlanRequest { Rank = 0 },
            "batch" => new PlanRequest { BatchSize = -1 },
            "seq" => new PlanRequest { SequenceLength = 0 },
            _ => new PlanRequest { Gpus = 0 },
        };
        var e = Assert.Throws<PlanException>(() => MemoryPlanner.Plan("smollm2-135m", request));
        Assert.Equal(field, e.Field);
        Assert.StartsWith(field, e.Message);
    }

    [Fact]
    public void Full_fine_tuning_of_nf4_weights_is_rejected()
    {
        var e = Assert.Throws<PlanException>(() =>
            MemoryPlanner.Plan("smollm2-135m", new PlanRequest { Method = TuningMethod.Full, WeightDtype = DType.Nf4 }));
        Assert.Equal("dtype", e.Field);
    }

    [Fact]
    public void Heads_not_dividing_hidden_size_is_rejected()
    {
        string json = File.ReadAllText(Fixture).Replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 5")
            .Replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 5");
        var e = Assert.Throws<PlanException>(() => ModelConfig.Parse(json));
        Assert.Equal("num_attention_heads", e.Field);
    }

    [Fact]
    public void Unsupported_model_type_is_rejected()
    {
        string json = File.ReadAllText(Fixture).Replace("\"llama\"", "\"bert\"");
        var e = Assert.Throws<PlanException>(() => ModelShape.FromConfig(ModelConfig.Parse(json)));
        Assert.Equal("model_type", e.Field);
    }

    [Fact]
    public void Tiny_llama_config_loads_from_a_file_with_the_closed_form_count()
    {
        string dir = Directory.CreateTempSubdirectory("peft-plan-").FullName;
        try
        {
            File.Copy(Fixture, Path.Combine(dir, "config.json"));
            var shape = ModelShape.Load(Path.Combine(dir, "config.json"));
            long h = 64, i = 176, v = 260, kv = 2 * 16, layers = 2;
            long perLayer = h * h + 2 * h * kv + h * h + 3 * h * i + 2 * h;
            Assert.Equal(2 * v * h + layers * perLayer + h, shape.TotalParameters);
            Assert.Equal(shape.TotalParameters, Presets.Resolve(dir).TotalParameters); // a folder works too

            var plan = MemoryPlanner.Plan(Path.Combine(dir, "config.json"), new PlanRequest { Rank = 4 });
            Assert.Equal(layers * (4 * (h + h) + 4 * (h + kv)), plan.TrainableParameters);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Gpt2_config_json_uses_its_own_field_names()
    {
        const string json = """{"model_type":"gpt2","n_embd":768,"n_layer":12,"n_head":12,"n_positions":1024,"vocab_size":50257,"n_inner":null}""";
        Assert.Equal(124_439_808, ModelShape.FromConfig(ModelConfig.Parse(json)).TotalParameters);
    }

    [Fact]
    public void Missing_config_file_names_the_model_field()
    {
        var e = Assert.Throws<PlanException>(() => ModelConfig.Load("/nonexistent/config.json"));
        Assert.Equal("model", e.Field);
    }

    [Fact]
    public void Text_names_parse_and_reject_unknowns()
    {
        Assert.Equal(TuningMethod.Qdora, PlanNames.Method("qdora"));
        Assert.Equal(OptimizerKind.PagedAdamW8bit, PlanNames.Optimizer("paged-adamw-8bit"));
        Assert.Equal(Sharding.Fsdp, PlanNames.Sharding("fsdp"));
        Assert.Equal(DType.Nf4, Dtypes.Parse("nf4", "dtype"));
        Assert.Equal("method", Assert.Throws<PlanException>(() => PlanNames.Method("ia3")).Field);
        Assert.Equal("adapter_dtype", Assert.Throws<PlanException>(() => Dtypes.Parse("int3", "adapter_dtype")).Field);
    }
}
