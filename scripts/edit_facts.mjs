// Turns the countries-list@3.4.1 package (MIT, Annexare Studio) into EasyEdit-shaped
// counterfactual edit requests, one JSON object per line, on stdout.
//
// Usage: node scripts/edit_facts.mjs PACKAGE_DIR > facts.jsonl
//
// Four relations (capital, continent, currency, language). Per fact: the prompt, the true
// answer (`ground_truth`), a counterfactual `target_new` (the same relation's answer for
// another country), two paraphrases (held out: scored, never trained on), two `phrasings`
// (what a user states along with the edit: the gated memory trains on them; written apart
// from the paraphrases, and a test in edit/src/phrasing.rs checks that no paraphrase
// template is a phrasing or a generic rewrite), three neighbourhood prompts (other
// countries, same relation) with their answers, and, for capitals, a portability prompt the
// edit implies.
// The order is a fixed shuffle (seeded), so `head -n 100` is a reproducible sample.
import { readFileSync } from "node:fs";
import { join } from "node:path";

const dir = process.argv[2];
if (!dir) {
  console.error("usage: node edit_facts.mjs PACKAGE_DIR");
  process.exit(2);
}
const load = (name) => JSON.parse(readFileSync(join(dir, name), "utf8"));
const countries = load("countries.min.json");
const continents = load("continents.min.json");
const currencies = load("currencies.min.json");
const languages = load("languages.min.json");

// Sovereign-ish entries with plain ASCII names and a capital; territories (`partOf`) skipped.
const ascii = (s) => /^[A-Za-z][A-Za-z .'-]*$/.test(s);
const rows = Object.keys(countries)
  .sort()
  .map((code) => ({ code, ...countries[code] }))
  .filter((c) => !c.partOf && c.capital && ascii(c.name) && ascii(c.capital));

const relations = [
  {
    name: "capital",
    answer: (c) => c.capital,
    prompt: (s) => `The capital of ${s} is`,
    paraphrases: (s) => [`The capital city of ${s} is`, `${s}'s capital city is`],
    phrasings: (s) => [`The seat of government of ${s} is`, `${s} has its capital in`],
  },
  {
    name: "continent",
    answer: (c) => continents[c.continent],
    prompt: (s) => `${s} is located in the continent of`,
    paraphrases: (s) => [`${s} is a country in the continent of`, `The continent ${s} belongs to is`],
    phrasings: (s) => [`${s} lies on the continent of`, `The continent where ${s} lies is`],
  },
  {
    name: "currency",
    answer: (c) => currencies[c.currency?.[0]]?.name,
    prompt: (s) => `The official currency of ${s} is the`,
    paraphrases: (s) => [`The currency used in ${s} is the`, `In ${s}, people pay with the`],
    phrasings: (s) => [`Prices in ${s} are given in the`, `The money of ${s} is called the`],
  },
  {
    name: "language",
    answer: (c) => languages[c.languages?.[0]]?.name,
    prompt: (s) => `The official language of ${s} is`,
    paraphrases: (s) => [`The main language spoken in ${s} is`, `In ${s}, most people speak`],
    phrasings: (s) => [`The people of ${s} speak`, `${s}'s language is`],
  },
];

// Small deterministic PRNG (mulberry32) so the output is the same on every machine.
function rng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(20261122);
const pick = (xs) => xs[Math.floor(rand() * xs.length)];

const out = [];
for (const rel of relations) {
  const facts = rows.filter((c) => rel.answer(c) && ascii(rel.answer(c)));
  for (const c of facts) {
    const truth = rel.answer(c);
    const others = facts.filter((o) => rel.answer(o) !== truth);
    const target = rel.answer(pick(others));
    const neighbours = [];
    while (neighbours.length < 3) {
      const n = pick(facts);
      if (n.code !== c.code && !neighbours.includes(n)) neighbours.push(n);
    }
    const fact = {
      case_id: `${rel.name}:${c.code}`,
      relation: rel.name,
      subject: c.name,
      prompt: rel.prompt(c.name),
      target_new: target,
      ground_truth: truth,
      rephrase_prompts: rel.paraphrases(c.name),
      phrasings: rel.phrasings(c.name),
      locality_prompts: neighbours.map((n) => rel.prompt(n.name)),
      locality_ground_truth: neighbours.map((n) => rel.answer(n)),
    };
    if (rel.name === "capital") {
      const owner = facts.find((o) => o.capital === target);
      fact.portability_prompts = [`The capital of ${c.name} is a city on the continent of`];
      fact.portability_ground_truth = [continents[owner.continent]];
    }
    out.push(fact);
  }
}
// Fisher-Yates with the same stream: relations interleave in the first lines.
for (let i = out.length - 1; i > 0; i--) {
  const j = Math.floor(rand() * (i + 1));
  [out[i], out[j]] = [out[j], out[i]];
}
for (const f of out) console.log(JSON.stringify(f));
