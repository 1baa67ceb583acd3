// Plotly.js (about 4.8 MB) is loaded on demand, after the page has fetched and shown its
// text and tables: a page's scripts never wait for it, only its figures do. Its address
// is content-hashed (cached for good), so the page says it: <meta name="plotly-src">.

let loading = null;

/** Resolves to window.Plotly, loading the script the first time it is asked for. */
export function plotlyReady() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!loading) {
    const src = document.querySelector('meta[name="plotly-src"]')?.content;
    if (!src) return Promise.reject(new Error("The page does not say where the plotting library is."));
    loading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.async = true;
      script.addEventListener("load", () => (window.Plotly ? resolve(window.Plotly) : reject(new Error("The plotting library did not start."))));
      script.addEventListener("error", () => {
        loading = null; // the next figure tries again
        script.remove();
        reject(new Error("The plotting library could not be loaded."));
      });
      document.head.append(script);
    });
  }
  return loading;
}
