// Skills: a skill is a folder /data/.skills/<name>/ with a SKILL.md whose YAML front
// matter holds `name` and `description`. The gateway offers them as the tools
// list_skills and use_skill, and as MCP prompts (one per skill) for clients that use
// prompts; the HTTP API's skill routes manage them.
//
// A skill's folder is written by the bot as much as by the API (exec can fill it with a
// checkout or node_modules), so its file list is bounded: a few folder levels, a few
// hundred files, and a note saying what was left out. A folder that cannot be listed
// makes that one skill unusable, with the reason, never the whole list.
import { parse as parseYaml } from "yaml";
import * as z from "zod";
import { Status, rpcCode } from "../../proto/rpc.js";
import { FileType } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { BridgeClient } from "../bridge/client.js";
import { WorkspaceError, type WorkspaceErrorCode } from "../workspace/errors.js";
import { isNotFound } from "./text-file.js";
import { defineTool, textResult, ToolError } from "./tool.js";

export const SKILLS_DIR = "/data/.skills";
/** Bytes of SKILL.md use_skill returns at most. */
const SKILL_MD_MAX_BYTES = 256 * 1024;
/** Folder levels of a skill whose files are listed (1 = the files directly in its folder). */
export const SKILL_FILES_MAX_DEPTH = 4;
/** Files of a skill listed at most (as many as the API lets one upsert write). */
export const SKILL_FILES_MAX = 200;
/** Entries of a skill's folder asked for in one listing: enough to find SKILL_FILES_MAX files among folders. */
const SKILL_LIST_PAGE = 1000;

export interface Skill {
  /** The front matter's name (the folder's name when it has none). */
  name: string;
  folder: string;
  description: string;
  /** Files of the skill, relative to its folder (at most SKILL_FILES_MAX, SKILL_FILES_MAX_DEPTH levels deep). */
  files: string[];
  /** What `files` leaves out (too many files, folders too deep), or null when it is the whole folder. */
  filesNote: string | null;
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

/** Codes of a failed listing or read that are about the skill's folder itself, not about the workspace. */
const SKILL_PROBLEMS: ReadonlyMap<number, WorkspaceErrorCode> = new Map([
  [Status.NOT_FOUND, "not_found"],
  [Status.PERMISSION_DENIED, "permission_denied"],
  [Status.INVALID_ARGUMENT, "invalid_argument"],
  [Status.FAILED_PRECONDITION, "conflict"],
  [Status.RESOURCE_EXHAUSTED, "resource_exhausted"],
]);

/** The skill-level code of an error, or undefined when the error is the workspace's (agent gone, cancelled). */
function codeOf(err: unknown): WorkspaceErrorCode | undefined {
  if (err instanceof WorkspaceError) return [...SKILL_PROBLEMS.values()].includes(err.code) ? err.code : undefined;
  const code = rpcCode(err);
  return code === undefined ? undefined : SKILL_PROBLEMS.get(code);
}

/** The files of a skill's folder, bounded in depth and count, with a note on what was left out. */
async function skillFiles(c: BridgeClient, dir: string): Promise<{ files: string[]; filesNote: string | null }> {
  let page;
  try {
    page = await c.listDir({ path: dir, recursive: true, maxDepth: SKILL_FILES_MAX_DEPTH, limit: SKILL_LIST_PAGE });
  } catch (err) {
    if (codeOf(err) !== "resource_exhausted") throw err;
    // Too many entries for the agent to walk (a checkout, node_modules): the files directly in the folder still help.
    const top = await c.listDir({ path: dir, limit: SKILL_LIST_PAGE });
    const files = top.entries.filter((f) => f.type === FileType.FILE).map((f) => f.name);
    const shown = files.slice(0, SKILL_FILES_MAX);
    return { files: shown, filesNote: `the folder holds too many entries to list; only ${shown.length === files.length && !top.hasMore ? "the" : `the first ${shown.length}`} files directly in it are shown` };
  }
  const files = page.entries.filter((f) => f.type === FileType.FILE).map((f) => f.path);
  const shown = files.slice(0, SKILL_FILES_MAX);
  const notes: string[] = [];
  if (shown.length < files.length || page.hasMore) notes.push(`only the first ${shown.length} files are listed (the folder holds ${page.total} entries)`);
  if (page.entries.some((f) => f.type === FileType.DIRECTORY && f.path.split("/").length >= SKILL_FILES_MAX_DEPTH)) {
    notes.push(`folders more than ${SKILL_FILES_MAX_DEPTH} levels down are not listed`);
  }
  return { files: shown, filesNote: notes.length === 0 ? null : notes.join("; ") };
}

/** One skill folder as a Skill: a folder that cannot be listed or read is a skill with a problem. */
async function readSkill(c: BridgeClient, folder: string): Promise<Skill> {
  const dir = `${SKILLS_DIR}/${folder}`;
  let name = folder;
  let description = "";
  let files: string[] = [];
  let filesNote: string | null = null;
  let problem: string | null = null;
  try {
    ({ files, filesNote } = await skillFiles(c, dir));
    try {
      const parsed = parseSkillFrontMatter((await c.readFile({ path: `${dir}/SKILL.md`, lineLimit: 200 })).content);
      if (typeof parsed === "string") problem = parsed;
      else ({ name, description } = parsed);
    } catch (err) {
      if (codeOf(err) !== "not_found") throw err;
      problem = "no SKILL.md";
    }
  } catch (err) {
    // The workspace itself failing (agent gone, cancelled) fails the call; the folder's own trouble is this skill's.
    if (codeOf(err) === undefined) throw err;
    problem = `it cannot be read (${(err as Error).message})`;
  }
  return { name, folder, description, files, filesNote, problem };
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
    skills.push(await readSkill(c, e.name));
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
  const cut = skill.filesNote === null ? "" : `[${skill.filesNote}; see the rest with list or glob on ${dir}]\n`;
  return `${skillMd}${skillMd.endsWith("\n") ? "" : "\n"}\n---\nThe skill's files (read them with read, run its scripts with exec):\n${files}${files === "" ? "" : "\n"}${cut}`;
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
