// Turns the countries-list@3.4.1 package (MIT, Annexare Studio) into EasyEdit-shaped
// counterfactual edit requests, one JSON object per line, on stdout.
//
// Usage: node scripts/edit_facts.mjs PACKAGE_DIR [--more] > facts.jsonl
//   --more: the further relations below instead of the four (scripts/edit_facts.sh writes
//   them to data/edit/facts_more.jsonl, after data/edit/facts.jsonl's own facts).
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

// Further relations, written only with `--more` (for the 1,000-edit grid row: the four above
// yield ≈ 200 facts the model knows). Their facts follow the four relations' in the output
// (shuffled among themselves with a stream of their own), so the first lines stay the same.
const more = [
  {
    name: "capital_of",
    subject: (c) => c.capital,
    answer: (c) => c.name,
    prompt: (s) => `${s} is the capital of`,
    paraphrases: (s) => [`${s} is the capital city of`, `The country whose capital is ${s} is`],
    phrasings: (s) => [`${s} serves as the capital of`, `${s} is the seat of government of`],
  },
  {
    name: "currency_code",
    answer: (c) => c.currency?.[0],
    prompt: (s) => `The ISO code of the currency of ${s} is`,
    paraphrases: (s) => [`The currency code of ${s} is`, `In ${s}, prices are marked in`],
    phrasings: (s) => [`${s}'s currency has the ISO code`, `The three-letter code of ${s}'s money is`],
  },
  {
    name: "native",
    answer: (c) => (c.native !== c.name ? c.native : undefined),
    prompt: (s) => `In its own language, ${s} is called`,
    paraphrases: (s) => [`The native name of ${s} is`, `People in ${s} call their country`],
    phrasings: (s) => [`${s}'s name in its own language is`, `The local name for ${s} is`],
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
function requests(rels, rand) {
  const pick = (xs) => xs[Math.floor(rand() * xs.length)];
  const out = [];
  for (const rel of rels) {
    const subject = rel.subject ?? ((c) => c.name);
    const facts = rows.filter((c) => rel.answer(c) && ascii(rel.answer(c)) && ascii(subject(c)));
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
        subject: subject(c),
        prompt: rel.prompt(subject(c)),
        target_new: target,
        ground_truth: truth,
        rephrase_prompts: rel.paraphrases(subject(c)),
        phrasings: rel.phrasings(subject(c)),
        locality_prompts: neighbours.map((n) => rel.prompt(subject(n))),
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
  return out;
}

const wantMore = process.argv.includes("--more");
const out = wantMore ? requests(more, rng(20261206)) : requests(relations, rng(20261122));
for (const f of out) console.log(JSON.stringify(f));
