using OpenAI;
using OpenAI.Chat;
using OpenQA.Selenium;
using OpenQA.Selenium.Chrome;
using OpenQA.Selenium.Support.UI;
using System.ClientModel;

namespace IlgpuTune.Deploy.Tests;

// The chat page in a real headless browser (Debian's chromium + chromedriver, which .ci/run installs): a question typed
// into the page is answered, streamed, with exactly the API's answer. The screenshot goes to ILGPUTUNE_SCREENSHOT when set
// (README shows the one committed under benchmarks/results/).
public sealed class ChatPageBrowserTests(ServedTinyDefault served) : IClassFixture<ServedTinyDefault>, IDisposable
{
    readonly TestKit.TempDir _dir = new();

    [Fact]
    public async Task TypedQuestionGetsTheApisStreamedAnswer()
    {
        const string system = "You are a professional color designer.", question = "What color is the sky at dusk?";
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 48 };
        var api = new ChatClient(served.ModelId, new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(served.BaseUrl + "/v1") });
        string expected = (await api.CompleteChatAsync([new SystemChatMessage(system), new UserChatMessage(question)], options)).Value.Content[0].Text;

        using var driver = Chromium();
        driver.Navigate().GoToUrl(served.BaseUrl + "/");
        var wait = new WebDriverWait(driver, TimeSpan.FromSeconds(30));
        wait.Until(d => d.FindElement(By.Id("model")).Text.Contains(served.ModelId));
        Set(driver, "system", system);
        Set(driver, "temperature", "0");
        Set(driver, "max_tokens", "48");
        driver.FindElement(By.Id("input")).SendKeys(question);
        driver.FindElement(By.Id("send")).Click();
        var answer = wait.Until(d => d.FindElements(By.CssSelector(".msg.assistant[data-done='true'], .msg.error")).FirstOrDefault());
        Assert.Equal("msg assistant", answer.GetAttribute("class"));
        Assert.Equal(expected, answer.GetDomProperty("textContent"));
        Assert.True(int.Parse(answer.GetAttribute("data-chunks") ?? "0") > 1, "the page did not receive the answer in pieces");
        Assert.Equal(question, driver.FindElement(By.CssSelector(".msg.user")).GetDomProperty("textContent"));

        string png = Environment.GetEnvironmentVariable("ILGPUTUNE_SCREENSHOT") is { Length: > 0 } target ? target : _dir.File("chat-page.png");
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(png))!);
        ((ITakesScreenshot)driver).GetScreenshot().SaveAsFile(png);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, File.ReadAllBytes(png)[..4]);
    }

    static void Set(IWebDriver driver, string id, string value)
    {
        var e = driver.FindElement(By.Id(id));
        e.Clear();
        e.SendKeys(value);
    }

    // Debian's packages: /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver).
    static ChromeDriver Chromium()
    {
        const string browser = "/usr/bin/chromium", driver = "/usr/bin/chromedriver";
        Assert.True(File.Exists(browser) && File.Exists(driver),
            "the chat page test needs Debian's chromium and chromedriver: apt-get install -y chromium chromium-driver");
        var options = new ChromeOptions { BinaryLocation = browser };
        options.AddArguments("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1000,720");
        var service = ChromeDriverService.CreateDefaultService(Path.GetDirectoryName(driver)!, Path.GetFileName(driver));
        service.HideCommandPromptWindow = true;
        return new ChromeDriver(service, options, TimeSpan.FromSeconds(60));
    }

    public void Dispose() => _dir.Dispose();
}
