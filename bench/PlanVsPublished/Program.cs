using PeftSharp.Memory;

// The planner against published, measured peaks (bench/plan-cases/*.json): one row per case with its source,
// then the median and worst absolute error. Exit 1 when either is over its bar (median 10%, worst 25%).
string dir = args.Length > 0 ? args[0] : Path.Combine(AppContext.BaseDirectory, "../../../../plan-cases");
IReadOnlyList<CaseResult> results;
try { results = PublishedCases.Evaluate(PublishedCases.Load(dir)); }
catch (PlanException e) { Console.Error.WriteLine(e.Message); return 2; }

Console.WriteLine($"{"case",-56} {"measured",-34} {"meas GB",8} {"plan GB",8} {"error",7}");
foreach (var r in results)
    Console.WriteLine($"{r.Case.Id,-56} {r.Case.Measured,-34} {r.Case.MeasuredBytes / 1e9,8:0.00} {r.Plan.TotalBytes / 1e9,8:0.00} {r.Error * 100,6:+0.0;-0.0;0.0}%");
Console.WriteLine();
foreach (var r in results) Console.WriteLine($"{r.Case.Id}: {r.Case.SourceUrl}");
var abs = results.Select(r => Math.Abs(r.Error)).Order().ToList();
double median = abs.Count % 2 == 1 ? abs[abs.Count / 2] : (abs[abs.Count / 2 - 1] + abs[abs.Count / 2]) / 2;
double worst = abs[^1];
Console.WriteLine();
Console.WriteLine($"{results.Count} cases: median |error| {median * 100:0.0}% (bar 10%), worst {worst * 100:0.0}% (bar 25%)");
return median <= 0.10 && worst <= 0.25 ? 0 : 1;
