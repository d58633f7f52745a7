using System.Xml.Linq;

namespace IlgpuTune.IO.Tests;

// README's project graph (the block after <!-- project-graph -->) is the .csproj files' truth: each product project's direct
// project references, and no ILGPU below the kernels (Numerics, IO and Data read and write files without the GPU stack).
public class ProjectGraphTests
{
    // "Core      -> Kernels" per line: project -> direct references (names without the IlgpuTune. prefix).
    static Dictionary<string, string[]> Graph()
    {
        var lines = File.ReadAllLines(Path.Combine(Root(), "README.md"));
        int start = Array.IndexOf(lines, "<!-- project-graph -->");
        Assert.True(start >= 0 && lines[start + 1] == "```", "README.md: no ``` block after <!-- project-graph -->");
        var graph = new Dictionary<string, string[]>();
        foreach (var line in lines.Skip(start + 2).TakeWhile(l => l != "```"))
        {
            var parts = line.Split("->");
            Assert.True(parts.Length == 2, $"README.md project graph: '{line}' is not 'Project -> References'");
            graph["IlgpuTune." + parts[0].Trim()] = parts[1].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(r => "IlgpuTune." + r).ToArray();
        }
        return graph;
    }

    static string Root()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "IlgpuTune.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("IlgpuTune.sln not found above " + AppContext.BaseDirectory);
    }

    static Dictionary<string, XDocument> Projects() =>
        new[] { "src", "kernels" }
            .SelectMany(d => Directory.GetFiles(Path.Combine(Root(), d), "*.csproj", SearchOption.AllDirectories))
            .ToDictionary(p => Path.GetFileNameWithoutExtension(p), p => XDocument.Load(p));

    static IEnumerable<string> Includes(XDocument project, string item) =>
        project.Descendants(item).Select(e => (string)e.Attribute("Include")!);

    [Fact]
    public void ProductProjectsReferenceExactlyTheDrawnGraph()
    {
        var (graph, projects) = (Graph(), Projects());
        Assert.Equal(graph.Keys.Order(), projects.Keys.Order());
        foreach (var (name, project) in projects)
        {
            var references = Includes(project, "ProjectReference").Select(p => Path.GetFileNameWithoutExtension(p.Replace('\\', '/'))).Order();
            Assert.True(graph[name].Order().SequenceEqual(references),
                $"{name} references {string.Join(", ", references)}; README.md draws {string.Join(", ", graph[name])}");
        }
    }

    [Theory]
    [InlineData("IlgpuTune.Numerics")]
    [InlineData("IlgpuTune.IO")]
    [InlineData("IlgpuTune.Data")]
    public void HostProjectsStayFreeOfIlgpu(string name)
    {
        var (graph, projects) = (Graph(), Projects());
        var closure = new HashSet<string>();
        var todo = new Stack<string>([name]);
        while (todo.TryPop(out var p))
            if (closure.Add(p)) foreach (var r in graph[p]) todo.Push(r);
        foreach (var p in closure)
            Assert.DoesNotContain(Includes(projects[p], "PackageReference"), r => r.StartsWith("ILGPU", StringComparison.Ordinal));
        Assert.DoesNotContain("IlgpuTune.Kernels", closure);
    }
}
