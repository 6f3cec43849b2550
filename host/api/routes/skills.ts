// Skills: a skill is a folder /data/.skills/<name>/ with a SKILL.md whose YAML front
// matter holds `name` and `description`. Upserts are atomic per skill: the files are
// written to a staging folder, which then replaces the skill by rename.
import path from "node:path/posix";
import { randomBytes } from "node:crypto";
import { Type } from "@sinclair/typebox";
import { botIdProblem } from "../../workspace/botid.js";
import { WorkspaceError } from "../../workspace/errors.js";
import { ApiError } from "../errors.js";
import type { ApiApp, RouteContext } from "../server.js";
import { BotParams, ErrorResponse } from "../schemas.js";
import { SKILLS_DIR, listSkills, parseSkillFrontMatter } from "../../tools/skills.js";

const MAX_SKILL_FILES = 200;
const MAX_SKILL_BYTES = 8 * 1024 * 1024;

/** A relative path that stays inside the skill's folder. */
function checkRelPath(skill: string, rel: string): string {
  const normal = path.normalize(rel);
  if (rel === "" || rel.includes("\0") || path.isAbsolute(rel) || normal.startsWith("..") || normal === "." || normal.endsWith("/")) {
    throw new ApiError("invalid_argument", `skill ${skill}: file path ${JSON.stringify(rel)} must be a relative path inside the skill`);
  }
  return normal;
}

/**
 * Paths that name one file twice (`SKILL.md` and `./SKILL.md`) or a file and a folder at
 * once (`a` and `a/b`) are refused before anything is written: the first would write
 * content other than what was checked, the second fails half-way through.
 */
function checkDistinctFiles(skill: string, rels: string[]): void {
  const seen = new Set<string>();
  for (const rel of rels) {
    if (seen.has(rel)) throw new ApiError("invalid_argument", `skill ${skill}: file ${JSON.stringify(rel)} is given twice`);
    seen.add(rel);
  }
  for (const rel of rels) {
    for (let dir = path.dirname(rel); dir !== "."; dir = path.dirname(dir)) {
      if (seen.has(dir)) throw new ApiError("invalid_argument", `skill ${skill}: ${JSON.stringify(dir)} is given as a file and as the folder of ${JSON.stringify(rel)}`);
    }
  }
}

function isNotFound(err: unknown): boolean {
  return err instanceof WorkspaceError ? err.code === "not_found" : (err as { code?: unknown }).code === 5;
}

export function registerSkillRoutes(app: ApiApp, ctx: RouteContext): void {
  const { manager } = ctx;
  const Skill = Type.Object({ name: Type.String(), folder: Type.String(), description: Type.String(), files: Type.Array(Type.String()), files_note: Type.Union([Type.String(), Type.Null()]), problem: Type.Union([Type.String(), Type.Null()]) });

  app.get(
    "/bots/:bot_id/container/skills",
    { config: { access: "bot" }, schema: { summary: "The workspace's skills (name, description, files)", params: BotParams, response: { 200: Type.Object({ skills: Type.Array(Skill) }), "4xx": ErrorResponse } } },
    async (req) => ({
      skills: (await manager.call(req.params.bot_id, (c) => listSkills(c))).map((s) => ({ name: s.name, folder: s.folder, description: s.description, files: s.files, files_note: s.filesNote, problem: s.problem })),
    }),
  );

  app.post(
    "/bots/:bot_id/container/skills",
    {
      config: { access: "bot" },
      schema: {
        summary: "Create or replace skills (atomically per skill)",
        params: BotParams,
        body: Type.Object(
          { skills: Type.Array(Type.Object({ name: Type.String({ minLength: 1, maxLength: 64 }), files: Type.Record(Type.String({ minLength: 1, maxLength: 1024 }), Type.String()) }, { additionalProperties: false }), { minItems: 1, maxItems: 50 }) },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ skills: Type.Array(Type.String()) }), "4xx": ErrorResponse },
      },
    },
    async (req) => {
      // Everything is checked before anything is written.
      const plans = req.body.skills.map((s) => {
        const problem = botIdProblem(s.name);
        if (problem !== undefined) throw new ApiError("invalid_argument", `skill name ${JSON.stringify(s.name)}: ${problem}`);
        const files = Object.entries(s.files).map(([rel, content]) => [checkRelPath(s.name, rel), content] as const);
        checkDistinctFiles(s.name, files.map(([rel]) => rel));
        if (files.length === 0 || files.length > MAX_SKILL_FILES) throw new ApiError("invalid_argument", `skill ${s.name}: 1 to ${MAX_SKILL_FILES} files`);
        if (files.reduce((n, [, c]) => n + Buffer.byteLength(c), 0) > MAX_SKILL_BYTES) throw new ApiError("payload_too_large", `skill ${s.name}: more than ${MAX_SKILL_BYTES} bytes`);
        const skillMd = files.find(([rel]) => rel === "SKILL.md");
        if (skillMd === undefined) throw new ApiError("invalid_argument", `skill ${s.name}: SKILL.md is missing`);
        const front = parseSkillFrontMatter(skillMd[1]);
        if (typeof front === "string") throw new ApiError("invalid_argument", `skill ${s.name}: ${front}`);
        return { name: s.name, files };
      });
      const names = new Set<string>();
      for (const p of plans) {
        if (names.has(p.name)) throw new ApiError("invalid_argument", `skill ${p.name} is given twice`);
        names.add(p.name);
      }
      await manager.call(req.params.bot_id, async (c) => {
        for (const plan of plans) {
          const tag = randomBytes(4).toString("hex");
          const staging = `${SKILLS_DIR}/.staging-${plan.name}-${tag}`;
          const trash = `${SKILLS_DIR}/.trash-${plan.name}-${tag}`;
          const target = `${SKILLS_DIR}/${plan.name}`;
          try {
            for (const [rel, content] of plan.files) await c.writeFile(`${staging}/${rel}`, content);
            const exists = await c.stat(target).then(
              () => true,
              (err: unknown) => {
                if (isNotFound(err)) return false;
                throw err;
              },
            );
            if (exists) await c.rename(target, trash);
            await c.rename(staging, target);
            if (exists) await c.deleteFile(trash, true);
          } catch (err) {
            await c.deleteFile(staging, true).catch(() => undefined);
            throw err;
          }
        }
      });
      return { skills: plans.map((p) => p.name) };
    },
  );

  app.delete(
    "/bots/:bot_id/container/skills",
    {
      config: { access: "bot" },
      schema: {
        summary: "Remove skills",
        params: BotParams,
        body: Type.Object({ names: Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { minItems: 1, maxItems: 100 }) }, { additionalProperties: false }),
        response: { 200: Type.Object({ deleted: Type.Array(Type.String()) }), "4xx": ErrorResponse },
      },
    },
    async (req) => {
      for (const n of req.body.names) {
        const problem = botIdProblem(n);
        if (problem !== undefined) throw new ApiError("invalid_argument", `skill name ${JSON.stringify(n)}: ${problem}`);
      }
      await manager.call(req.params.bot_id, async (c) => {
        for (const n of req.body.names) {
          await c.stat(`${SKILLS_DIR}/${n}`).catch((err: unknown) => {
            if (isNotFound(err)) throw new ApiError("not_found", `no skill ${n}`);
            throw err;
          });
        }
        for (const n of req.body.names) await c.deleteFile(`${SKILLS_DIR}/${n}`, true);
      });
      return { deleted: req.body.names };
    },
  );
}
