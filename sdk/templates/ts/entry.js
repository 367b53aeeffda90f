// The component's entry: connects the SDK to the host, then exports the processor.
import "./component.js";
export { init, process } from "./app.ts";
