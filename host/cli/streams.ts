// Reading the API's streamed answers: SSE frames (create, data operations) and NDJSON
// lines (exec). Bytes are decoded with a StringDecoder, which keeps a UTF-8 character
// split across two chunks whole: decoding each chunk on its own turned it into two
// U+FFFD.
import { StringDecoder } from "node:string_decoder";

async function* decoded(body: AsyncIterable<Buffer | string>): AsyncGenerator<string> {
  const decoder = new StringDecoder("utf8");
  for await (const chunk of body) yield typeof chunk === "string" ? chunk : decoder.write(chunk);
  const rest = decoder.end();
  if (rest !== "") yield rest;
}

/** Reads `event:`/`data:` frames from an SSE body. */
export async function* sseEvents(body: AsyncIterable<Buffer | string>): AsyncGenerator<{ event: string; data: unknown }> {
  let buf = "";
  for await (const text of decoded(body)) {
    buf += text;
    let i: number;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const frame = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length > 0) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

/** The parsed JSON values of an NDJSON body, one per complete line. */
export async function* ndjsonLines<T>(body: AsyncIterable<Buffer | string>): AsyncGenerator<T> {
  let buf = "";
  for await (const text of decoded(body)) {
    buf += text;
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      yield JSON.parse(line) as T;
    }
  }
}
