// The GraphiQL page of contact-monitor: the API key is entered once (kept in this tab's
// sessionStorage, shared with the dashboard at /) and sent with every request, as the
// Authorization header over HTTP and in connection_init over the websocket.
"use strict";

(function () {
  const STORAGE = "contact-monitor.api-key";
  const input = document.getElementById("api-key");
  const state = document.getElementById("key-state");
  const url = window.location.origin + "/graphql";
  const wsUrl = url.replace(/^http/, "ws");
  let root = null;

  function key() {
    return sessionStorage.getItem(STORAGE) || "";
  }

  function render() {
    const bearer = key() ? { Authorization: "Bearer " + key() } : {};
    state.textContent = key() ? "key set for this tab" : "enter a key: every query needs one";
    const fetcher = GraphiQL.createFetcher({
      url: url,
      subscriptionUrl: wsUrl,
      headers: bearer,
      wsConnectionParams: bearer,
    });
    if (root === null) {
      root = ReactDOM.createRoot(document.getElementById("graphiql"));
    }
    root.render(
      React.createElement(GraphiQL, {
        key: key(), // a new key: a new editor session (the schema is fetched again)
        fetcher: fetcher,
        defaultEditorToolsVisibility: true,
        shouldPersistHeaders: false,
        defaultQuery:
          "# contact-monitor: the most recently active contacts\n" +
          "{\n  contacts(first: 5) {\n    totalCount\n    edges { node { id email points tags lastActive } }\n  }\n}\n",
      }),
    );
  }

  document.getElementById("key-button").disabled = false;
  document.getElementById("key-form").addEventListener("submit", function (event) {
    event.preventDefault();
    const value = input.value.trim();
    if (value) {
      sessionStorage.setItem(STORAGE, value);
    } else {
      sessionStorage.removeItem(STORAGE);
    }
    input.value = "";
    render();
  });
  render();
})();
