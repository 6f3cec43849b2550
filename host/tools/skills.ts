// Skills: a skill is a folder /data/.skills/<name>/ with a SKILL.md whose YAML front
// matter holds `name` and `description`. The gateway offers them as the tools
// list_skills and use_skill, and as MCP prompts (one per skill) for clients that use
// prompts; the HTTP API's skill routes manage them.
import { parse as parseYaml } from "yaml";
import * as z from "zod";
import { FileType } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { BridgeClient } from "../bridge/client.js";
import { isNotFound } from "./text-file.js";
import { defineTool, textResult, ToolError } from "./tool.js";

export const SKILLS_DIR = "/data/.skills";
/** Bytes of SKILL.md use_skill returns at most. */
const SKILL_MD_MAX_BYTES = 256 * 1024;

export interface Skill {
  /** The front matter's name (the folder's name when it has none). */
  name: string;
  folder: string;
  description: string;
  /** Files of the skill, relative to its folder. */
  files: string[];
  /** Why the skill is unusable (no SKILL.md, bad front matter), or null. */
  problem: string | null;
}

/** `name` and `description` from SKILL.md's front matter, or why it has none. */
export function parseSkillFrontMatter(text: string): { name: string; description: string } | string {
  const m = /^\uFEFF?---\r?\n([\s\S]*?)\r?\n---\s*(\r?\n|$)/.exec(text);
  if (!m) return "SKILL.md must start with a YAML front matter block (--- … ---)";
  let doc: unknown;
  try {
    doc = parseYaml(m[1]!);
  } catch (err) {
    return `SKILL.md front matter is not valid YAML: ${(err as Error).message}`;
  }
  const d = (typeof doc === "object" && doc !== null ? doc : {}) as { name?: unknown; description?: unknown };
  if (typeof d.name !== "string" || d.name === "") return "SKILL.md front matter needs a name";
  if (typeof d.description !== "string" || d.description === "") return "SKILL.md front matter needs a description";
  return { name: d.name, description: d.description };
}

export async function listSkills(c: BridgeClient): Promise<Skill[]> {
  let top;
  try {
    top = await c.listDir({ path: SKILLS_DIR, limit: 10_000 });
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
  const skills: Skill[] = [];
  for (const e of top.entries) {
    if (e.type !== FileType.DIRECTORY || e.name.startsWith(".")) continue;
    const dir = `${SKILLS_DIR}/${e.name}`;
    const files = (await c.listDir({ path: dir, recursive: true, limit: 10_000 })).entries.filter((f) => f.type === FileType.FILE).map((f) => f.path);
    let description = "";
    let name = e.name;
    let problem: string | null = null;
    try {
      const parsed = parseSkillFrontMatter((await c.readFile({ path: `${dir}/SKILL.md`, lineLimit: 200 })).content);
      if (typeof parsed === "string") problem = parsed;
      else ({ name, description } = parsed);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      problem = "no SKILL.md";
    }
    skills.push({ name, folder: e.name, description, files, problem });
  }
  return skills;
}

/** A usable skill by its name (or folder name), with its SKILL.md, or undefined. */
export async function loadSkill(c: BridgeClient, name: string): Promise<{ skill: Skill; skillMd: string } | undefined> {
  const skills = await listSkills(c);
  const skill = skills.find((s) => s.problem === null && s.name === name) ?? skills.find((s) => s.problem === null && s.folder === name);
  if (skill === undefined) return undefined;
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of c.readRaw(`${SKILLS_DIR}/${skill.folder}/SKILL.md`, { length: SKILL_MD_MAX_BYTES })) {
    chunks.push(chunk);
    size += chunk.byteLength;
  }
  return { skill, skillMd: Buffer.concat(chunks, size).toString("utf8") };
}

/** What use_skill and a skill's prompt return: the instructions, then where the skill's files are. */
export function skillText(skill: Skill, skillMd: string): string {
  const dir = `${SKILLS_DIR}/${skill.folder}`;
  const files = skill.files.map((f) => `- ${dir}/${f}`).join("\n");
  return `${skillMd}${skillMd.endsWith("\n") ? "" : "\n"}\n---\nThe skill's files (read them with read, run its scripts with exec):\n${files}\n`;
}

export const listSkillsTool = defineTool({
  name: "list_skills",
  title: "List skills",
  description: `The skills installed in the workspace (folders under ${SKILLS_DIR} with a SKILL.md): name and description of each. Call use_skill with a name to get its instructions.`,
  inputSchema: z.strictObject({}),
  annotations: { readOnlyHint: true, openWorldHint: false },
  async run(_args, ctx) {
    const skills = await ctx.call((c) => listSkills(c));
    if (skills.length === 0) return textResult(`No skills are installed (nothing under ${SKILLS_DIR}).`);
    const lines = skills.map((s) => (s.problem === null ? `- ${s.name}: ${s.description}` : `- ${s.folder} (unusable: ${s.problem})`));
    return textResult(`${skills.length} skill${skills.length === 1 ? "" : "s"}:\n${lines.join("\n")}`);
  },
});

export const useSkillTool = defineTool({
  name: "use_skill",
  title: "Use a skill",
  description: "Returns a skill's instructions (its SKILL.md) and the list of its files. Follow the instructions; the files are in the workspace.",
  inputSchema: z.strictObject({ name: z.string().min(1).max(256).describe("The skill's name, as list_skills shows it") }),
  annotations: { readOnlyHint: true, openWorldHint: false },
  async run(args, ctx) {
    const loaded = await ctx.call((c) => loadSkill(c, args.name));
    if (loaded === undefined) {
      const names = (await ctx.call((c) => listSkills(c))).filter((s) => s.problem === null).map((s) => s.name);
      throw new ToolError(`there is no skill ${JSON.stringify(args.name)}; ${names.length === 0 ? "no skills are installed" : `the skills are: ${names.join(", ")}`}`);
    }
    return textResult(skillText(loaded.skill, loaded.skillMd));
  },
});
