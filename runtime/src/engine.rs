//! [`Engine`]: the model file, graph and tokenizer together — what an application holds.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use burn::tensor::Device;

use crate::cpu::CpuContext;
use crate::generate::{self, Adaptation, GenerateError, GenerateOptions, Generation};
use crate::model::chat::{ChatError, ChatMessage, ChatTemplate};
use crate::model::llama::{Llama, ModelError};
use crate::model::tokenizer::{Tokenizer, TokenizerError};
use crate::model_file::{LoadError, ModelFile};

/// Opening or running an [`Engine`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The file could not be opened or parsed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The graph could not be built from the file.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The tokenizer metadata is unusable.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The chat template failed to render.
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// The kernels' thread pool could not start.
    #[error(transparent)]
    Cpu(#[from] crate::cpu::CpuPoolError),
    /// Generation could not run.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// The tokenizer's vocabulary and the model's embedding rows differ: ids one side makes
    /// would index past the other.
    #[error(
        "the tokenizer has {tokenizer} tokens but the model's vocabulary has {model} rows \
         (tokenizer.ggml.tokens vs llama.vocab_size)"
    )]
    VocabMismatch {
        /// Tokens in `tokenizer.ggml.tokens`.
        tokenizer: usize,
        /// Rows of the token embedding.
        model: usize,
    },
}

/// A loaded model: the mapped file, the llama graph on a device, and the tokenizer.
pub struct Engine {
    file: ModelFile,
    model: Llama,
    tokenizer: Tokenizer,
    template: ChatTemplate,
}

impl Engine {
    /// Maps the GGUF file at `path` (no copy of the weights) and builds the graph on `device`,
    /// running the quantized kernels on `threads` CPU threads (0 = all cores).
    pub fn load(
        path: impl AsRef<Path>,
        device: &Device,
        threads: usize,
    ) -> Result<Self, EngineError> {
        let file = ModelFile::open(path)?;
        let model = Llama::load(&file, device, Arc::new(CpuContext::new(threads)?))?;
        let tokenizer = Tokenizer::from_gguf(file.gguf())?;
        let (tokenizer_vocab, model_vocab) = (tokenizer.vocab_size(), model.config().n_vocab);
        if tokenizer_vocab != model_vocab {
            return Err(EngineError::VocabMismatch {
                tokenizer: tokenizer_vocab,
                model: model_vocab,
            });
        }
        let token_text = |id: Option<u32>| {
            id.and_then(|id| tokenizer.token_text(id))
                .unwrap_or_default()
                .to_string()
        };
        let template = ChatTemplate::from_gguf(file.gguf())?.with_special_tokens(
            token_text(tokenizer.bos()),
            token_text(Some(tokenizer.eos())),
        );
        Ok(Self {
            file,
            model,
            tokenizer,
            template,
        })
    }

    /// The mapped model file.
    pub fn file(&self) -> &ModelFile {
        &self.file
    }

    /// The graph.
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// CPU threads the quantized kernels run on.
    pub fn threads(&self) -> usize {
        self.model
            .weight(0, crate::model::llama::Proj::Q)
            .cpu()
            .threads()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids of `text`, special tokens such as `<|im_start|>` parsed.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.tokenizer.encode(text, true)
    }

    /// Continues `prompt` (raw text, no chat template), streaming text pieces to `on_text` as
    /// they complete; generation stops at the end-of-sequence token or `opts.stop_tokens`.
    pub fn complete(
        &self,
        prompt: &str,
        opts: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<(String, Generation), EngineError> {
        self.complete_with(prompt, opts, Adaptation::default(), on_text)
    }

    /// [`Engine::complete`] through an adapter and/or a soft prompt. The adaptation is named per
    /// call: the engine holds no "current adapter" that another call could switch underneath.
    pub fn complete_with(
        &self,
        prompt: &str,
        opts: &GenerateOptions,
        adaptation: Adaptation<'_>,
        on_text: impl FnMut(&str),
    ) -> Result<(String, Generation), EngineError> {
        let tokens = self.encode(prompt);
        self.continue_tokens_with(&tokens, opts, adaptation, on_text)
    }

    /// Answers a conversation rendered with the file's chat template.
    pub fn chat(
        &self,
        messages: &[ChatMessage],
        opts: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<(String, Generation), EngineError> {
        self.chat_with(messages, opts, Adaptation::default(), on_text)
    }

    /// [`Engine::chat`] through an adapter and/or a soft prompt.
    pub fn chat_with(
        &self,
        messages: &[ChatMessage],
        opts: &GenerateOptions,
        adaptation: Adaptation<'_>,
        on_text: impl FnMut(&str),
    ) -> Result<(String, Generation), EngineError> {
        let tokens = self.chat_tokens(messages)?;
        self.continue_tokens_with(&tokens, opts, adaptation, on_text)
    }

    /// The token ids of a conversation rendered with the file's chat template, ready for the
    /// assistant's turn. A template that writes `bos_token` itself (Llama 3, Gemma) gets one
    /// BOS, not the template's plus the one the tokenizer adds, as in `transformers`.
    pub fn chat_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        let prompt = self.template.render(messages, true)?;
        let mut tokens = self.encode(&prompt);
        let bos = self.tokenizer.bos();
        let bos_text = self.template.bos_token();
        if !bos_text.is_empty()
            && prompt.starts_with(bos_text)
            && tokens.len() >= 2
            && bos.is_some_and(|b| tokens[0] == b && tokens[1] == b)
        {
            tokens.remove(0);
        }
        Ok(tokens)
    }

    /// Generates after the token ids `prompt`.
    pub fn continue_tokens(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<(String, Generation), EngineError> {
        self.continue_tokens_with(prompt, opts, Adaptation::default(), on_text)
    }

    /// [`Engine::continue_tokens`] through an adapter and/or a soft prompt.
    pub fn continue_tokens_with(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        adaptation: Adaptation<'_>,
        mut on_text: impl FnMut(&str),
    ) -> Result<(String, Generation), EngineError> {
        let mut opts = opts.clone();
        let eos = self.tokenizer.eos();
        if !opts.stop_tokens.contains(&eos) {
            opts.stop_tokens.push(eos);
        }
        let mut stream = self.tokenizer.stream_decoder();
        let mut text = String::new();
        let generation = generate::generate_with(&self.model, prompt, &opts, adaptation, |id| {
            if self.tokenizer.is_control(id) {
                return ControlFlow::Continue(());
            }
            if let Some(piece) = stream.push(id) {
                on_text(&piece);
                text.push_str(&piece);
            }
            ControlFlow::Continue(())
        })?;
        if let Some(rest) = stream.finish() {
            on_text(&rest);
            text.push_str(&rest);
        }
        Ok((text, generation))
    }

    /// The logits at the last position of `prompt` (special tokens parsed), with its token ids.
    pub fn last_logits(&self, prompt: &str) -> Result<(Vec<u32>, Vec<f32>), EngineError> {
        self.last_logits_with(prompt, Adaptation::default())
    }

    /// [`Engine::last_logits`] through an adapter and/or a soft prompt.
    pub fn last_logits_with(
        &self,
        prompt: &str,
        adaptation: Adaptation<'_>,
    ) -> Result<(Vec<u32>, Vec<f32>), EngineError> {
        let tokens = self.encode(prompt);
        let logits = generate::last_logits_with(&self.model, &tokens, adaptation)?;
        Ok((tokens, logits))
    }
}
