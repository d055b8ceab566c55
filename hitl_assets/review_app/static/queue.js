"use strict";
(function () {
  const queue = document.getElementById("queue");
  const message = document.getElementById("queue-message");
  const claim = document.getElementById("claim");
  const start = document.getElementById("start");

  async function doClaim() {
    claim.disabled = true;
    message.textContent = "Claiming…";
    const result = await HITL.post("/api/claim", {});
    if (!result.ok) {
      message.textContent = "Could not claim: " + HITL.detail(result);
      claim.disabled = false;
      return;
    }
    if (result.data.claimed === 0 && !result.data.next_task_id) {
      message.textContent = "The queue is empty: nothing to claim right now.";
      claim.disabled = false;
      return;
    }
    window.location.reload();
  }

  function doStart() {
    const next = queue.dataset.next;
    if (next) window.location.href = "/tasks/" + next;
  }

  claim.addEventListener("click", doClaim);
  start.addEventListener("click", doStart);
  document.addEventListener("keydown", (event) => {
    if (HITL.typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "c" || event.key === "C") { event.preventDefault(); doClaim(); }
    else if (event.key === "Enter") { event.preventDefault(); doStart(); }
  });
  queue.dataset.ready = "true";  // shortcuts are live (tests wait for this)
})();
