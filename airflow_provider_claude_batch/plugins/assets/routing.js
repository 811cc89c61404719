// The "Routing & cost" page: the charts are server-rendered SVG; this loads the audit (parsing the DAG
// folder takes a few seconds, so it comes after the charts) and submits the DAG filter on change.
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("config").textContent);
  var audit = document.getElementById("audit");
  var filter = document.getElementById("dag-filter");
  if (filter) {
    filter.addEventListener("change", function () { filter.form.submit(); });
  }
  function load(refresh) {
    audit.setAttribute("aria-busy", "true");
    fetch(cfg.prefix + "/routing/audit" + (refresh ? "?refresh=1" : ""), {credentials: "same-origin"})
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          throw new Error("Not signed in to Airflow (HTTP " + response.status + "): open this page from the Airflow UI.");
        }
        if (!response.ok) { throw new Error("The audit could not be loaded (HTTP " + response.status + ")."); }
        return response.text();
      }).then(function (fragment) {
        audit.innerHTML = fragment;  // server-rendered, every value escaped there
        audit.setAttribute("data-loaded", "true");
      }).catch(function (error) {
        audit.textContent = error.message;
        audit.setAttribute("data-loaded", "error");
      }).then(function () { audit.removeAttribute("aria-busy"); });
  }
  document.addEventListener("click", function (event) {
    if (event.target && event.target.id === "audit-refresh") { load(true); }
  });
  load(false);
})();
