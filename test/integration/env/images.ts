// The test images: built by scripts/image-builder.ts, imported here with ctr.
import type { ContainerdEnv } from "./containerd.js";
import { buildTestImages, type TestImage, type TestImageName } from "../../../scripts/image-builder.js";

export * from "../../../scripts/image-builder.js";

/** Imports (and unpacks) the test images into the env's containerd; returns their refs. */
export async function importTestImages(
  env: ContainerdEnv,
  images?: Record<TestImageName, TestImage>,
): Promise<Record<TestImageName, string>> {
  const built = images ?? (await buildTestImages());
  await Promise.all(Object.values(built).map((img) => env.ctr(["images", "import", "--all-platforms", img.tarPath])));
  const listed = (await env.ctr(["images", "ls", "-q"])).stdout.split("\n");
  for (const img of Object.values(built)) {
    if (!listed.includes(img.ref)) {
      throw new Error(`ctr images import ${img.tarPath} did not create ${img.ref}; images: ${listed.join(" ")}`);
    }
  }
  return { busybox: built.busybox.ref, glibc: built.glibc.ref };
}
