// gRPC server reflection (v1 and v1alpha) over the descriptors protobuf-es
// embeds in the generated code, so grpcurl-style tools need no .proto files.
import type * as grpc from "@grpc/grpc-js";
import { toBinary, type DescEnum, type DescFile, type DescMessage } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { addService, Status, type StatusCode } from "../../proto/rpc.js";
import * as v1 from "../../proto/gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../proto/gen/grpc/reflection/v1alpha/reflection_pb.js";

type Request = v1.ServerReflectionRequest | v1alpha.ServerReflectionRequest;

class DescriptorIndex {
  readonly byName = new Map<string, DescFile>();
  readonly bySymbol = new Map<string, DescFile>();
  readonly services: string[] = [];

  constructor(files: DescFile[], services: string[]) {
    this.services = services;
    for (const f of files) this.add(f);
  }

  private add(file: DescFile): void {
    if (this.byName.has(file.name + ".proto")) return;
    this.byName.set(file.name + ".proto", file);
    for (const dep of file.dependencies) this.add(dep);
    const addEnum = (e: DescEnum) => this.bySymbol.set(e.typeName, file);
    const addMessage = (m: DescMessage) => {
      this.bySymbol.set(m.typeName, file);
      m.nestedMessages.forEach(addMessage);
      m.nestedEnums.forEach(addEnum);
    };
    file.messages.forEach(addMessage);
    file.enums.forEach(addEnum);
    for (const s of file.services) {
      this.bySymbol.set(s.typeName, file);
      for (const m of s.methods) this.bySymbol.set(`${s.typeName}.${m.name}`, file);
    }
  }

  /** The file and its transitive dependencies, encoded, the file first. */
  encode(file: DescFile): Uint8Array[] {
    const seen = new Set<DescFile>();
    const out: Uint8Array[] = [];
    const visit = (f: DescFile) => {
      if (seen.has(f)) return;
      seen.add(f);
      out.push(toBinary(FileDescriptorProtoSchema, f.proto));
      f.dependencies.forEach(visit);
    };
    visit(file);
    return out;
  }
}

function answer(index: DescriptorIndex, req: Request) {
  const r = req.messageRequest;
  const original = { host: req.host, messageRequest: r } as never;
  const error = (code: StatusCode, message: string) => ({
    validHost: req.host,
    originalRequest: original,
    messageResponse: { case: "errorResponse" as const, value: { errorCode: code, errorMessage: message } },
  });
  const files = (file: DescFile | undefined, what: string) =>
    file
      ? {
          validHost: req.host,
          originalRequest: original,
          messageResponse: { case: "fileDescriptorResponse" as const, value: { fileDescriptorProto: index.encode(file) } },
        }
      : error(Status.NOT_FOUND, `${what} not found`);
  switch (r.case) {
    case "listServices":
      return {
        validHost: req.host,
        originalRequest: original,
        messageResponse: {
          case: "listServicesResponse" as const,
          value: { service: index.services.map((name) => ({ name })) },
        },
      };
    case "fileByFilename":
      return files(index.byName.get(r.value), `file ${r.value}`);
    case "fileContainingSymbol":
      return files(index.bySymbol.get(r.value.replace(/^\./, "")), `symbol ${r.value}`);
    case "fileContainingExtension":
      return error(Status.NOT_FOUND, `no extensions of ${r.value.containingType}`);
    case "allExtensionNumbersOfType":
      return index.bySymbol.has(r.value)
        ? {
            validHost: req.host,
            originalRequest: original,
            messageResponse: {
              case: "allExtensionNumbersResponse" as const,
              value: { baseTypeName: r.value, extensionNumber: [] },
            },
          }
        : error(Status.NOT_FOUND, `type ${r.value} not found`);
    default:
      return error(Status.INVALID_ARGUMENT, "empty reflection request");
  }
}

/** Serves reflection for the given files; `services` are the names listed by list_services. */
export function addReflectionService(server: grpc.Server, files: DescFile[], services: string[]): void {
  const index = new DescriptorIndex([...files, v1.file_grpc_reflection_v1_reflection, v1alpha.file_grpc_reflection_v1alpha_reflection], [
    ...services,
    v1.ServerReflection.typeName,
    v1alpha.ServerReflection.typeName,
  ]);
  const handler = (call: grpc.ServerDuplexStream<Request, unknown>) =>
    new Promise<void>((resolve, reject) => {
      call.on("data", (req: Request) => call.write(answer(index, req)));
      call.on("end", () => resolve());
      call.on("error", reject);
      call.on("cancelled", () => resolve());
    });
  addService(server, v1.ServerReflection, { serverReflectionInfo: handler as never });
  addService(server, v1alpha.ServerReflection, { serverReflectionInfo: handler as never });
}
