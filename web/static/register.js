// Registration form: show only the fields of the chosen kind of account. Without script every
// field stays visible (each label says whom it is for), and the server checks them anyway.
const groups = {
  delegate: ["delegate_kind", "association_name"],
  company_rep: ["company_id"],
  customer: ["legal_entity"],
};

function fieldBlock(name) {
  if (name === "legal_entity") return document.getElementById("legal-entity");
  const input = document.getElementById("f-" + name);
  return input ? input.closest(".mb-4") : null;
}

function update() {
  const chosen = document.querySelector('input[name="kind"]:checked');
  const kind = chosen ? chosen.value : "";
  for (const [owner, names] of Object.entries(groups)) {
    for (const name of names) {
      const block = fieldBlock(name);
      if (block) block.hidden = owner !== kind;
    }
  }
  const delegateKind = document.getElementById("f-delegate_kind");
  const association = fieldBlock("association_name");
  if (association && kind === "delegate") {
    association.hidden = delegateKind && delegateKind.value !== "association";
  }
}

document.addEventListener("change", (event) => {
  if (event.target.name === "kind" || event.target.id === "f-delegate_kind") update();
});
document.addEventListener("DOMContentLoaded", update);
