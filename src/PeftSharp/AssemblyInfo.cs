using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("PeftSharp.Tests")]
[assembly: InternalsVisibleTo("PeftSharp.Cli.Tests")]
[assembly: InternalsVisibleTo("PeftSharp.Serving.Tests")]
